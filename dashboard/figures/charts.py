"""Metrics and traces -> plotly charts: utilization and bubble per rank, memory over time, staleness.

    from dashboard.figures.charts import utilization_figure, memory_figure, staleness_figure
    utilization_figure({"1f1b": metrics})           # one bar group per rank, one bar per schedule
    memory_figure({"1f1b": trace}, capacity=80e9)   # GiB held per rank over time, peaks, the capacity
    staleness_figure({"2bw": metrics})              # delay tau_s and weight versions per stage

Several schedules share a chart (one colour each) so they compare at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.style import GIB, series_color, time_unit
from traces.metrics import Metrics, memory_series
from traces.schema import Trace

EVERY_TICK = 16
"""Up to this many ranks or stages, every one gets its tick (and a bar its value); beyond, plotly picks."""
LEGEND_RANKS = 8
"""Up to this many ranks, memory curves have legend entries; beyond, the hover names the rank."""
MAX_POINTS = 1500
"""Points per rank of a memory curve; longer series keep each bin's highest point (peaks survive)."""
TOTAL_POINTS = 24_000
"""Points of all ranks' curves of one schedule together (with many ranks, fewer each)."""


def utilization_figure(metrics: Mapping[str, Metrics]) -> go.Figure:
    """Per rank: the busy share (solid) and the bubble (pale) of each schedule, stacked to 100%."""
    figure = go.Figure()
    for index, (name, metric) in enumerate(metrics.items()):
        ranks = list(range(metric.ranks))
        common = {"x": ranks, "offsetgroup": name, "legendgroup": name}
        figure.add_bar(
            **common,
            y=metric.utilization,
            name=name,
            marker={"color": series_color(index)},
            hovertemplate=f"{name}, rank %{{x}}: utilization %{{y:.1%}}<extra></extra>",
        )
        figure.add_bar(
            **common,
            y=metric.bubble,
            base=metric.utilization,
            name=f"{name} bubble",
            showlegend=False,
            marker={"color": series_color(index), "opacity": 0.25},
            hovertemplate=f"{name}, rank %{{x}}: bubble %{{y:.1%}}<extra></extra>",
        )
    figure.update_layout(
        barmode="group",
        height=300,
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        yaxis={"title": "utilization (solid) + bubble (pale)", "tickformat": ".0%", "range": [0, 1]},
        xaxis={"title": "rank", "dtick": 1 if max(m.ranks for m in metrics.values()) <= EVERY_TICK else None},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
    )
    return figure


def memory_figure(traces: Mapping[str, Trace], *, capacity: int | None = None) -> go.Figure:
    """Bytes held per rank over time, one panel per schedule, each rank's peak marked, the device
    capacity as a line. A trace without memory sizes says so instead."""
    names = list(traces)
    figure = make_subplots(rows=len(names), cols=1, subplot_titles=names, vertical_spacing=0.12)
    sized = False
    for row, name in enumerate(names, start=1):
        trace = traces[name]
        unit = time_unit(trace.makespan)
        series = memory_series(trace)
        budget = max(100, min(MAX_POINTS, TOTAL_POINTS // max(1, len(series))))
        for rank, points in enumerate(series):
            if not points or not any(held for _, held in points):
                continue
            sized = True
            times, held = decimated(points, budget)
            times, gib = np.round(times * unit.scale, 6), np.round(held / GIB, 6)
            _add_rank_curve(figure, row, rank, times, gib, legend=row == 1 and len(series) <= LEGEND_RANKS)
        figure.update_xaxes(title_text=f"time ({unit.name})", row=row, col=1)
        figure.update_yaxes(title_text="GiB", rangemode="tozero", row=row, col=1)
        if capacity:
            figure.add_hline(
                y=capacity / GIB,
                line={"color": "#E45756", "dash": "dash"},
                annotation_text=f"capacity {capacity / GIB:.1f} GiB",
                annotation_position="top left",
                row=row,
                col=1,
            )
    if not sized:
        figure.add_annotation(
            text="no memory sizes in these traces (unit costs size nothing: choose presets or a cost file)",
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            showarrow=False,
        )
    figure.update_layout(
        height=80 + 260 * len(names),
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        meta={"sized": sized},
    )
    return figure


def decimated(points: list[tuple[float, int]], most: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `most` points: the highest of each run of consecutive points."""
    times = np.fromiter((moment for moment, _ in points), dtype=float, count=len(points))
    held = np.fromiter((size for _, size in points), dtype=float, count=len(points))
    if len(points) <= most:
        return times, held
    groups = np.array_split(np.arange(len(points)), most)
    keep = np.array([group[np.argmax(held[group])] for group in groups])
    return times[keep], held[keep]


def _add_rank_curve(figure: go.Figure, row: int, rank: int, times, gib, *, legend: bool) -> None:
    color = series_color(rank)
    figure.add_scatter(
        x=times,
        y=gib,
        mode="lines",
        line={"shape": "hv", "color": color, "width": 1.5},
        name=f"rank {rank}",
        legendgroup=f"rank {rank}",
        showlegend=legend,
        hovertemplate=f"rank {rank}: %{{y:.3f}} GiB at %{{x:.4g}}<extra></extra>",
        row=row,
        col=1,
    )
    peak = int(np.argmax(gib))
    figure.add_scatter(
        x=[times[peak]],
        y=[gib[peak]],
        mode="markers",
        marker={"color": color, "size": 9, "symbol": "triangle-down"},
        name=f"rank {rank} peak",
        legendgroup=f"rank {rank}",
        showlegend=False,
        hovertemplate=f"rank {rank} peak: %{{y:.3f}} GiB<extra></extra>",
        row=row,
        col=1,
    )


def staleness_figure(metrics: Mapping[str, Metrics]) -> go.Figure:
    """Per stage: the delay tau_s (updates between the weights a gradient was computed at and the
    update it joins) and the weight versions held at once, one bar per schedule."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("delay tau_s per stage", "weight versions held per stage")
    )
    few = max(metric.stages for metric in metrics.values()) <= EVERY_TICK
    for index, (name, metric) in enumerate(metrics.items()):
        stages = list(range(metric.stages))
        mismatches = [[count] for count in metric.mismatches]
        for column, values in ((1, metric.delay), (2, metric.weight_versions)):
            figure.add_bar(
                x=stages,
                y=values,
                name=name,
                legendgroup=name,
                showlegend=column == 1,
                marker={"color": series_color(index)},
                text=values if few else None,
                textposition="outside",
                cliponaxis=False,
                customdata=mismatches,
                hovertemplate=f"{name}, stage %{{x}}: %{{y}} (mismatched microbatches: "
                "%{customdata[0]})<extra></extra>",
                row=1,
                col=column,
            )
    figure.update_xaxes(title_text="stage", dtick=1 if few else None)
    figure.update_yaxes(rangemode="tozero", dtick=1 if few else None)
    figure.update_layout(
        barmode="group",
        height=300,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure

"""Sweep rows (simulator.sweep.run_point) -> plotly heatmaps or lines of one metric against P and m.

    from dashboard.figures.sweep import sweep_heatmap, sweep_lines
    sweep_heatmap(rows, metric="bubble_fraction")               # a panel per schedule: P x m
    sweep_lines(rows, metric="peak_memory_max", budget=80e9)    # a panel per P: metric against m

A point the schedule cannot take (2BW with m < P, ...) has an `error` and no value: a blank cell whose
hover says why, or a gap in its line. With a memory budget, peak memory above it is marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.style import GIB, series_color

METRICS: dict[str, str] = {
    "tokens_per_s": "throughput (tokens/s)",
    "samples_per_s": "throughput (samples/s)",
    "bubble_fraction": "bubble fraction",
    "peak_memory_max": "peak memory (GiB, the fullest rank)",
    "step_time": "step time (s)",
    "delay_max": "largest delay tau_s",
}
"""The metrics a sweep chart can show (run_point's keys) and their titles."""

Row = Mapping[str, Any]


def value(row: Row, metric: str) -> float | None:
    """A row's value of `metric` (GiB for memory), None where the point failed or has no size."""
    raw = row.get(metric)
    if row.get("error") or raw in (None, ""):
        return None
    return float(raw) / GIB if metric == "peak_memory_max" else float(raw)


def _over(row: Row, metric: str, budget: float | None) -> bool:
    number = value(row, metric)
    return metric == "peak_memory_max" and budget is not None and number is not None and number > budget / GIB


def sweep_heatmap(rows: Sequence[Row], *, metric: str, budget: float | None = None) -> go.Figure:
    """A panel per schedule: the metric over P (rows) x m (columns), one colour scale for all."""
    schedules = list(dict.fromkeys(row["schedule"] for row in rows))
    ranks = sorted({row["ranks"] for row in rows})
    microbatches = sorted({row["microbatches"] for row in rows})
    figure = make_subplots(rows=1, cols=len(schedules), subplot_titles=schedules, shared_yaxes=True)
    for column, name in enumerate(schedules, start=1):
        cells = {(row["ranks"], row["microbatches"]): row for row in rows if row["schedule"] == name}
        grid = [[cells.get((p, m), {}) for m in microbatches] for p in ranks]
        figure.add_heatmap(
            x=[str(m) for m in microbatches],
            y=[str(p) for p in ranks],
            z=[[value(cell, metric) for cell in line] for line in grid],
            text=[[_cell_text(cell, metric, budget) for cell in line] for line in grid],
            texttemplate="%{text}",
            customdata=[[cell.get("error") or "" for cell in line] for line in grid],
            hovertemplate=f"{name}, P = %{{y}}, m = %{{x}}: %{{text}} %{{customdata}}<extra></extra>",
            coloraxis="coloraxis",
            row=1,
            col=column,
        )
        figure.update_xaxes(title_text="m (microbatches)", type="category", row=1, col=column)
    figure.update_yaxes(type="category")
    figure.update_yaxes(title_text="P (stages)", row=1, col=1)
    figure.update_layout(
        coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": METRICS[metric]}}},
        height=120 + 48 * len(ranks),
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
    )
    return figure


def si(number: float) -> str:
    """3 significant digits with an SI suffix: 2.99M, 45.1k, 0.273."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(number) >= scale:
            return f"{number / scale:.3g}{suffix}"
    return f"{number:.3g}"


def _cell_text(row: Row, metric: str, budget: float | None) -> str:
    number = value(row, metric)
    if number is None:
        return "x" if row.get("error") else ""
    text = si(number)
    return f"{text} over" if _over(row, metric, budget) else text


def sweep_lines(rows: Sequence[Row], *, metric: str, budget: float | None = None) -> go.Figure:
    """A panel per P: the metric against m, a line per schedule; the memory budget as a line."""
    schedules = list(dict.fromkeys(row["schedule"] for row in rows))
    ranks = sorted({row["ranks"] for row in rows})
    figure = make_subplots(
        rows=1, cols=len(ranks), subplot_titles=[f"P = {p}" for p in ranks], shared_yaxes=True
    )
    for column, p in enumerate(ranks, start=1):
        for index, name in enumerate(schedules):
            points = sorted(
                (row["microbatches"], value(row, metric))
                for row in rows
                if row["schedule"] == name and row["ranks"] == p
            )
            figure.add_scatter(
                x=[m for m, _ in points],
                y=[number for _, number in points],
                name=name,
                legendgroup=name,
                showlegend=column == 1,
                mode="lines+markers",
                line={"color": series_color(index)},
                hovertemplate=f"{name}, P = {p}, m = %{{x}}: %{{y:.4g}}<extra></extra>",
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text="m", type="log", dtick=0.30103, row=1, col=column)  # powers of 2
    if metric == "peak_memory_max" and budget:
        figure.add_hline(
            y=budget / GIB,
            line={"color": "#E45756", "dash": "dash"},
            annotation_text=f"budget {budget / GIB:.1f} GiB",
            annotation_position="top left",
        )
    figure.update_yaxes(title_text=METRICS[metric], rangemode="tozero", row=1, col=1)
    figure.update_layout(
        height=380,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def over_budget(rows: Sequence[Row], budget: float | None) -> list[Row]:
    """The points whose peak memory exceeds the budget (bytes)."""
    return [row for row in rows if _over(row, "peak_memory_max", budget)]

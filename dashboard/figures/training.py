"""Run folders' metrics -> plotly curves: loss and validation loss, tokens/s, against step or time.

    from dashboard.figures.training import training_figure
    training_figure({"2bw": rows_2bw, "1f1b": rows_1f1b}, x="time")

`rows` are metrics.jsonl's objects (step, loss, val_loss when measured, tokens_per_s, time). Each run
keeps one colour: its loss solid, its validation loss dashed with markers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.style import series_color

X_AXES = {"step": "step", "time": "wall-clock time (s)"}
"""What the curves can be drawn against, and the axis title."""


def training_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], *, x: str = "step") -> go.Figure:
    """Loss (top) and tokens/s (bottom) of every run, against `x` ("step" or "time")."""
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.65, 0.35],
        subplot_titles=("loss (solid) and validation loss (dashed)", "tokens/s"),
    )
    for index, (name, rows) in enumerate(runs.items()):
        color = series_color(index)
        _curve(figure, rows, x, "loss", name=name, color=color, row=1)
        _curve(figure, rows, x, "val_loss", name=f"{name} validation", color=color, row=1, dashed=True)
        _curve(figure, rows, x, "tokens_per_s", name=f"{name} tokens/s", color=color, row=2, legend=False)
    figure.update_xaxes(title_text=X_AXES[x], row=2, col=1)
    figure.update_yaxes(title_text="loss", row=1, col=1)
    figure.update_yaxes(title_text="tokens/s", rangemode="tozero", row=2, col=1)
    figure.update_layout(
        height=560,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": 1.04, "yanchor": "bottom"},
    )
    return figure


def _curve(
    figure: go.Figure,
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    *,
    name: str,
    color: str,
    row: int,
    dashed: bool = False,
    legend: bool = True,
) -> None:
    points = [(entry[x], entry[y]) for entry in rows if _number(entry.get(x)) and _number(entry.get(y))]
    if not points:
        return
    xs, ys = zip(*points, strict=True)
    figure.add_scatter(
        x=list(xs),
        y=list(ys),
        name=name,
        mode="lines+markers" if dashed else "lines",
        line={"color": color, "dash": "dash" if dashed else "solid"},
        showlegend=legend,
        hovertemplate=f"{name}<br>{x} %{{x:.4g}}: %{{y:.4g}}<extra></extra>",
        row=row,
        col=1,
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

"""The study's plots as plotly figures (pure functions of the tables and curves), and writing them out.

    figures = study_figures(study, records, summary, step_times)    # name -> go.Figure
    notes = write_figures(figures, folder / "plots", png=True)      # HTML always, PNG through kaleido

- loss_vs_step: mean validation loss over seeds against steps (equal tokens), one panel per optimizer
  variant (rows) and depth (columns), one line per schedule (dashed: PipeDream's per-token lr rule).
- loss_vs_time: the same against the time the steps take at the predicted step time at scale.
- gap_vs_depth: mean gap to the synchronous run against P, one panel per variant; the error bars are
  the seed spread, the gap's standard deviation over seeds (a gap inside them reads as no gap).

A dashboard page can call these functions on a study folder's files (executor.study.store).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from executor.study.grid import Cell, StudyConfig, cells
from executor.study.store import RunRecord
from schedules.fileio import write_atomic

COLORS = {"1f1b": "#444444", "pipedream": "#d62728", "2bw": "#1f77b4", "amdp": "#2ca02c"}
"""Line colour per schedule (others get plotly's default cycle)."""
PANEL_HEIGHT = 230


def panels(study: StudyConfig) -> list[tuple[str, float]]:
    """(variant, lr scale) of every panel row, in the grid's order."""
    return list(dict.fromkeys((cell.variant, cell.lr_scale) for cell in cells(study)))


def label(cell: Cell) -> str:
    return cell.schedule + (" (lr per token)" if cell.lr_rule == "per-token" else "")


def mean_curve(study: StudyConfig, records: dict[str, RunRecord], cell: Cell) -> list[tuple[int, float]]:
    """(steps done, mean validation loss over the seeds) where every seed has a finite value."""
    per_seed = [dict(records[c.name].vals()) for c in _seeds_of(study, cell)]
    steps = sorted(set.intersection(*(set(vals) for vals in per_seed)))
    return [
        (step + 1, statistics.fmean(vals[step] for vals in per_seed))
        for step in steps
        if all(vals[step] is not None for vals in per_seed)
    ]


def _seeds_of(study: StudyConfig, cell: Cell) -> list[Cell]:
    return [c for c in cells(study) if c.seed in study.seeds and _same_but_seed(c, cell)]


def _same_but_seed(a: Cell, b: Cell) -> bool:
    return (a.schedule, a.variant, a.stages, a.lr_rule, a.lr_scale) == (
        b.schedule,
        b.variant,
        b.stages,
        b.lr_rule,
        b.lr_scale,
    )


def curve_figure(
    study: StudyConfig,
    records: dict[str, RunRecord],
    x_of: Callable[[Cell, int], float | None],
    x_title: str,
    title: str,
) -> go.Figure:
    """Validation loss against x_of(cell, steps done), one panel per (variant, depth)."""
    rows, depths = panels(study), list(study.depths)
    names = [f"{_panel_name(v, s)}, P = {p}" for v, s in rows for p in depths]
    figure = make_subplots(rows=len(rows), cols=len(depths), subplot_titles=names, shared_yaxes=True)
    shown: set[str] = set()
    for cell, row in _lines(study, rows):
        points = [(x_of(cell, step), loss) for step, loss in mean_curve(study, records, cell)]
        points = [(x, y) for x, y in points if x is not None]
        name = label(cell)
        figure.add_trace(
            go.Scatter(
                x=[x for x, _ in points],
                y=[y for _, y in points],
                mode="lines",
                name=name,
                legendgroup=name,
                showlegend=name not in shown,
                line={"color": COLORS.get(cell.schedule), "dash": "dash" if "token" in name else None},
            ),
            row=row + 1,
            col=depths.index(cell.stages) + 1,
        )
        shown.add(name)
    figure.update_xaxes(title_text=x_title, row=len(rows))
    figure.update_yaxes(title_text="val loss", col=1)
    figure.update_layout(title=title, height=PANEL_HEIGHT * len(rows) + 120, width=360 * len(depths) + 200)
    return figure


def _lines(study: StudyConfig, rows: list[tuple[str, float]]) -> list[tuple[Cell, int]]:
    """(cell of the first seed, panel row) of every line; a correction's panel also shows the reference
    with the base optimizer, so its gap can be read off the panel."""
    lines = [(c, rows.index((c.variant, c.lr_scale))) for c in cells(study) if c.seed == study.seeds[0]]
    for cell, row in list(lines):
        if cell.variant != cell.optimizer:
            lines.append((cell.reference(study.reference), row))
    return list(dict.fromkeys(lines))


def _panel_name(variant: str, scale: float) -> str:
    return variant if scale == 1.0 else f"{variant}, lr x {scale:.3g}"


def gap_figure(study: StudyConfig, summary: list[dict[str, Any]]) -> go.Figure:
    """Mean gap to the synchronous run against depth, one panel per (variant, lr scale)."""
    rows = [row for row in summary if row["schedule"] != study.reference]
    keys = [key for key in panels(study) if any((r["optimizer"], r["lr_scale"]) == key for r in rows)]
    figure = make_subplots(rows=1, cols=max(1, len(keys)), subplot_titles=[_panel_name(*k) for k in keys])
    shown: set[str] = set()
    for line in dict.fromkeys((r["schedule"], r["lr_rule"], r["optimizer"], r["lr_scale"]) for r in rows):
        points = [r for r in rows if (r["schedule"], r["lr_rule"], r["optimizer"], r["lr_scale"]) == line]
        points = [r for r in points if r["gap_mean"] is not None]
        name = line[0] + (" (lr per token)" if line[1] == "per-token" else "")
        figure.add_trace(
            go.Scatter(
                x=[r["stages"] for r in points],
                y=[r["gap_mean"] for r in points],
                mode="lines+markers",
                error_y={"type": "data", "array": [r["seed_spread"] or 0.0 for r in points]},
                name=name,
                legendgroup=name,
                showlegend=name not in shown,
                line={"color": COLORS.get(line[0]), "dash": "dash" if line[1] == "per-token" else None},
            ),
            row=1,
            col=keys.index((line[2], line[3])) + 1,
        )
        shown.add(name)
    figure.add_hline(y=0.0, line={"color": "#999999", "width": 1})
    figure.update_xaxes(title_text="stages P", tickvals=list(study.depths))
    figure.update_yaxes(title_text="val loss gap to 1F1B", col=1)
    title = "Gap to synchronous training at equal tokens (mean over seeds; bars: seed spread)"
    figure.update_layout(title=title, height=420, width=max(500, 300 * len(keys)))
    return figure


def study_figures(
    study: StudyConfig,
    records: dict[str, RunRecord],
    summary: list[dict[str, Any]],
    step_times: dict[tuple[str, int, str], float],
    time_label: str,
) -> dict[str, go.Figure]:
    """Every plot of the study, by file stem."""

    def predicted(cell: Cell, steps: int) -> float | None:
        step_time = step_times.get((cell.schedule, cell.stages, cell.variant))
        return None if step_time is None else steps * step_time

    return {
        "loss_vs_step": curve_figure(
            study, records, lambda _, steps: steps, "steps (equal tokens)", "Validation loss against steps"
        ),
        "loss_vs_time": curve_figure(
            study, records, predicted, "seconds (predicted)", f"Validation loss against time: {time_label}"
        ),
        "gap_vs_depth": gap_figure(study, summary),
    }


def write_figures(figures: dict[str, go.Figure], folder: Path, *, png: bool, plotly_js: str) -> list[str]:
    """HTML for each figure and, with png, a PNG through kaleido; every file written atomically.

    plotly_js 'directory' puts plotly.min.js beside the HTML (works offline), 'cdn' loads it from the
    web (keeps the folder small). Returns notes for the user (why PNGs are missing)."""
    if plotly_js == "directory" and not (folder / "plotly.min.js").exists():
        write_atomic(folder / "plotly.min.js", get_plotlyjs())
    for name, figure in figures.items():
        write_atomic(folder / f"{name}.html", figure.to_html(include_plotlyjs=plotly_js))
    if not png:
        return []
    try:
        images = {name: figure.to_image(format="png") for name, figure in figures.items()}
    except Exception as error:  # kaleido missing, or no Chrome for it to drive: HTML only
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [f"PNG plots skipped ({first}); the HTML plots are written"]
    for name, image in images.items():
        write_bytes_atomic(folder / f"{name}.png", image)
    return []


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Bytes through a temporary sibling and a rename, as schedules.fileio.write_atomic does for text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""The study's tables as CSV and Markdown (pure text; the command writes them atomically).

csv_text(rows, COLUMNS)             # results.csv / summary.csv: full precision
markdown_table(rows, COLUMNS)       # results.md: the same rows, rounded for reading
summary_markdown(...)               # summary.md: target, learning rates, step times, gaps per depth
"""

from __future__ import annotations

import csv
import io
from typing import Any

from executor.study.analysis import SUMMARY_COLUMNS

LOSS_COLUMNS = {"final_val_loss", "best_val_loss", "final_val_loss_mean", "final_val_loss_std", "seed_spread"}
GAP_COLUMNS = {"gap_to_sync", "gap_mean"}
TIME_COLUMNS = {
    "step_time_s",
    "time_to_target_s",
    "cpu_step_time_s",
    "cpu_time_to_target_s",
    "wall_s",
    "time_to_target_s_mean",
    "cpu_time_to_target_s_mean",
}


def csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Full precision (repr of floats), empty cells for missing values."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else _raw(row[c]) for c in columns})
    return out.getvalue()


def _raw(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


def cell_text(column: str, value: Any) -> str:
    """One value as the Markdown tables show it."""
    if value is None or value == "":
        return "-"
    if column in GAP_COLUMNS and isinstance(value, float):
        return f"{value:+.4f}"
    if column in LOSS_COLUMNS and isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.3g}" if column not in TIME_COLUMNS else _seconds(value)
    return str(value)


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.3g} s"


def markdown_table(
    rows: list[dict[str, Any]], columns: tuple[str, ...], titles: dict[str, str] | None = None
) -> str:
    titles = titles or {}
    head = "| " + " | ".join(titles.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell_text(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body]) + "\n"


SUMMARY_TABLE = tuple(c for c in SUMMARY_COLUMNS if c not in ("lr_scale", "stages", "seeds"))
SUMMARY_TITLES = {
    "lr_rule": "lr rule",
    "final_val_loss_mean": "final val loss",
    "final_val_loss_std": "(std)",
    "gap_mean": "gap to 1F1B",
    "seed_spread": "(seed spread)",
    "reached": "reached target",
    "iters_to_target_mean": "steps to target",
    "time_to_target_s_mean": "time to target (predicted)",
    "cpu_time_to_target_s_mean": "time to target (this CPU)",
}


def summary_markdown(
    *,
    header: list[str],
    lr_rows: list[dict[str, Any]],
    step_rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    depths: tuple[int, ...],
) -> str:
    """summary.md: what was run, the lr sweep, the step times, and one table of cells per depth."""
    parts = ["# Study summary\n", "\n".join(header) + "\n", "## Learning rates\n"]
    parts.append(markdown_table(lr_rows, ("optimizer", "lr", "tried")))
    parts += ["\n## Step times\n", markdown_table(step_rows, tuple(step_rows[0]) if step_rows else ())]
    for stages in depths:
        rows = [row for row in summary if row["stages"] == stages]
        scaled = [row for row in rows if row["lr_scale"] == 1.0]
        parts += [f"\n## P = {stages}\n", markdown_table(scaled, SUMMARY_TABLE, SUMMARY_TITLES)]
        probe = [row for row in rows if row["lr_scale"] != 1.0]
        if probe:
            scale = probe[0]["lr_scale"]
            parts += [
                f"\nlr probe (lr x {scale:.3g}):\n\n",
                markdown_table(probe, SUMMARY_TABLE, SUMMARY_TITLES),
            ]
    return "".join(parts)

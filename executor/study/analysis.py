"""From a study's run files to its tables: the target, gaps to the synchronous run, iterations and time.

    target = find_target(study, records)
    rows = result_rows(study, records, target, step_times, cpu_times)    # one per run (results.csv)
    summary = summary_rows(rows)                                         # one per cell, over seeds

Definitions (docs/study/README.md states them for readers):

- final_val_loss: the validation loss after the last step; best_val_loss: the lowest measured.
- gap_to_sync: final_val_loss minus that of the reference schedule (1F1B) with the same base optimizer,
  depth, seed and lr scale: a paired difference, the same batches on both sides.
- iters_to_target: steps (of m microbatches: equal tokens for every schedule) until the first validation
  at or below the target; None when never. Resolution: val_every steps.
- time_to_target_s = iters_to_target x the step time predicted at scale; cpu_time_to_target_s the same
  with this CPU's step time.
- Over seeds: mean and sample standard deviation. The seed spread of a gap is the standard deviation
  of its per-seed values (each a paired difference: same batches, same initial weights); a |mean gap|
  within it reads "no gap". The spread of the loss itself over seeds (final_val_loss_std) is larger:
  it also holds the seeds' different initial weights and validation batches, which the pairing removes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from executor.study.grid import StudyConfig, Variant, cell_lr, cells, updates_per_step
from executor.study.store import RunRecord

COLUMNS = (
    "schedule",
    "optimizer",
    "lr_rule",
    "lr_scale",
    "lr",
    "stages",
    "seed",
    "updates_per_step",
    "tokens_per_step",
    "final_val_loss",
    "best_val_loss",
    "gap_to_sync",
    "iters_to_target",
    "updates_to_target",
    "tokens_to_target",
    "step_time_s",
    "time_to_target_s",
    "cpu_step_time_s",
    "cpu_time_to_target_s",
    "wall_s",
    "diverged_at",
)
"""results.csv, one row per run."""
SUMMARY_COLUMNS = (
    "schedule",
    "optimizer",
    "lr_rule",
    "lr_scale",
    "stages",
    "seeds",
    "final_val_loss_mean",
    "final_val_loss_std",
    "gap_mean",
    "seed_spread",
    "verdict",
    "reached",
    "iters_to_target_mean",
    "time_to_target_s_mean",
    "cpu_time_to_target_s_mean",
)
"""summary.csv, one row per cell (schedule, optimizer, rule, lr scale, depth) over its seeds."""
CELL_KEY = ("schedule", "optimizer", "lr_rule", "lr_scale", "stages")


@dataclass(frozen=True, kw_only=True)
class Target:
    """The validation loss every run is timed to."""

    value: float
    """The loss."""
    how: str
    """Where it comes from, in words."""


def target_step(study: StudyConfig) -> int:
    """The last validated step within target_fraction of the budget."""
    limit = math.ceil(study.target_fraction * study.steps) - 1
    validated = [k for k in range(study.steps) if (k + 1) % study.val_every == 0 or k == study.steps - 1]
    return max([k for k in validated if k <= limit], default=validated[0])


def find_target(study: StudyConfig, records: dict[str, RunRecord]) -> Target:
    """study.target, or the reference's mean validation loss at target_step with the first variant."""
    if study.target is not None:
        return Target(value=study.target, how="given (--target)")
    base = Variant.parse(study.variants[0]).optimizer
    step = target_step(study)
    found = [
        dict(records[cell.name].vals()).get(step)
        for cell in cells(study)
        if cell.schedule == study.reference and cell.variant == base and cell.lr_scale == 1.0
    ]
    losses = [loss for loss in found if loss is not None]
    if not losses:
        raise ValueError(f"no validation loss of {study.reference} with {base} at step {step}")
    how = (
        f"{study.reference} with {base}: mean validation loss after step {step + 1} of {study.steps} "
        f"(the last validation within {study.target_fraction:.0%} of the budget), over {len(losses)} "
        "runs (depths x seeds)"
    )
    return Target(value=statistics.fmean(losses), how=how)


def iters_to(vals: list[tuple[int, float | None]], target: float) -> int | None:
    """Steps completed at the first validation at or below target; None if none is."""
    return next((step + 1 for step, loss in vals if loss is not None and loss <= target), None)


def result_rows(
    study: StudyConfig,
    records: dict[str, RunRecord],
    lrs: dict[str, float],
    target: Target,
    step_times: dict[tuple[str, int, str], float],
    cpu_times: dict[tuple[str, str, int], float],
) -> list[dict[str, Any]]:
    """One row per run (COLUMNS). Step times in seconds: step_times by (schedule, P, variant) at scale,
    cpu_times by (schedule, variant, P) on this CPU."""
    rows = []
    for cell in cells(study):
        record = records[cell.name]
        reference = records[cell.reference(study.reference).name]
        final, reference_final = record.end["final_val_loss"], reference.end["final_val_loss"]
        per_step = updates_per_step(cell.schedule, cell.stages, study.microbatches)
        iters = iters_to(record.vals(), target.value)
        step_time = step_times.get((cell.schedule, cell.stages, cell.variant))
        cpu_time = cpu_times.get((cell.schedule, cell.variant, cell.stages))
        rows.append(
            {
                "schedule": cell.schedule,
                "optimizer": cell.variant,
                "lr_rule": cell.lr_rule,
                "lr_scale": cell.lr_scale,
                "lr": cell_lr(study, cell, lrs[cell.optimizer]),
                "stages": cell.stages,
                "seed": cell.seed,
                "updates_per_step": per_step,
                "tokens_per_step": record.header["tokens_per_step"],
                "final_val_loss": final,
                "best_val_loss": record.end["best_val_loss"],
                "gap_to_sync": None if final is None or reference_final is None else final - reference_final,
                "iters_to_target": iters,
                "updates_to_target": _times(iters, per_step),
                "tokens_to_target": _times(iters, record.header["tokens_per_step"]),
                "step_time_s": step_time,
                "time_to_target_s": _times(iters, step_time),
                "cpu_step_time_s": cpu_time,
                "cpu_time_to_target_s": _times(iters, cpu_time),
                "wall_s": record.end["wall_s"],
                "diverged_at": record.end["diverged_at"],
            }
        )
    return rows


def _times(count: int | None, each: float | None) -> float | None:
    return None if count is None or each is None else count * each


def summary_rows(rows: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """One row per cell over its seeds (SUMMARY_COLUMNS), in the order the cells first appear."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in CELL_KEY), []).append(row)
    return [
        summary_row(dict(zip(CELL_KEY, key, strict=True)), group, reference) for key, group in groups.items()
    ]


def summary_row(cell: dict[str, Any], group: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    finals, gaps = [r["final_val_loss"] for r in group], [r["gap_to_sync"] for r in group]
    reached = [r for r in group if r["iters_to_target"] is not None]
    return {
        **cell,
        "seeds": len(group),
        "final_val_loss_mean": _mean(finals),
        "final_val_loss_std": _std(finals),
        "gap_mean": _mean(gaps),
        "seed_spread": _std(gaps),
        "verdict": verdict(cell["schedule"] == reference, gaps),
        "reached": f"{len(reached)}/{len(group)}",
        "iters_to_target_mean": _mean([r["iters_to_target"] for r in reached]),
        "time_to_target_s_mean": _mean([r["time_to_target_s"] for r in reached]),
        "cpu_time_to_target_s_mean": _mean([r["cpu_time_to_target_s"] for r in reached]),
    }


def verdict(is_reference: bool, gaps: list[float | None]) -> str:
    """reference, diverged, one seed, no gap (|mean| within the gaps' standard deviation), worse or better."""
    if is_reference:
        return "reference"
    if any(gap is None for gap in gaps):
        return "diverged"
    if len(gaps) < 2:
        return "one seed"
    mean = statistics.fmean(gaps)
    if abs(mean) <= statistics.stdev(gaps):
        return "no gap"
    return "worse" if mean > 0 else "better"


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values)


def _std(values: list[float | None]) -> float | None:
    if len(values) < 2 or any(v is None for v in values):
        return None
    return statistics.stdev(values)

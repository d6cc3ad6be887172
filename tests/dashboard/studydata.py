"""A small synthetic study folder in the format `pipesim study` writes, for the Study page's tests.

    write_study(tmp_path / "study", finished=True)     # study.json, lrs.json, runs/, predicted.json,
                                                       # results.csv and summary.csv (as the command)

No training: every run's curve is made up (a straight line, shifted per schedule, depth and seed), so
the folder takes milliseconds; the tables come from executor.study.analysis and report, as the command's
do. finished=False stops after half the run files: a study in progress.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from executor.study.analysis import COLUMNS, SUMMARY_COLUMNS, find_target, result_rows, summary_rows
from executor.study.grid import Cell, StudyConfig, base_optimizers, cells, runs, source
from executor.study.report import csv_text
from executor.study.store import StudyFolder, read_json, write_json
from executor.study.train import Curve
from schedules.fileio import write_atomic

STUDY = StudyConfig(
    schedules=("1f1b", "pipedream", "2bw"), variants=("adamw", "muon"), depths=(2, 4), seeds=(0, 1), steps=6,
    microbatches=4, microbatch_size=2, layers=4, val_every=2, val_microbatches=1, warmup_steps=1,
)  # fmt: skip
LRS = {"adamw": 1e-3, "nadamw": 1e-3, "muon": 2e-2, "basis-rotation": 3e-3}
"""The lr "chosen" per base optimizer (lrs.json holds those of the study's variants)."""
STEP_TIME = {"1f1b": 0.5, "pipedream": 0.3, "2bw": 0.4, "amdp": 0.35}
"""Predicted step time in seconds per schedule (any depth and optimizer)."""
CPU_STEP_TIME = 2.0


def shift(cell: Cell) -> float:
    """How far a run's line sits above 1F1B with AdamW: PipeDream's grows with depth (and its per-token
    rule at P = 4 never reaches the target), 2BW's varies with the seed (with muon: no gap)."""
    found = cell.seed * 0.001 + (cell.variant == "muon") * 0.005
    if cell.schedule == "pipedream":
        found += 0.01 * cell.stages + (0.25 if cell.lr_rule == "per-token" and cell.stages == 4 else 0.0)
    if cell.schedule == "2bw":
        found += 0.04 + 0.03 * cell.seed if cell.variant == "adamw" else 0.01 - 0.02 * cell.seed
    return found


def curve(study: StudyConfig, cell: Cell) -> Curve:
    """A straight fall of 0.1 per step, shifted up by shift(cell)."""
    losses = tuple(3.0 - 0.1 * step + shift(cell) for step in range(study.steps))
    validated = [step for step in range(study.steps) if (step + 1) % study.val_every == 0]
    return Curve(losses=losses, vals=tuple((step, losses[step]) for step in validated), wall_s=1.5)


def write_study(path: Path, *, finished: bool = True, study: StudyConfig = STUDY) -> StudyFolder:
    folder = StudyFolder(path)
    folder.claim({"study": study.to_dict(), "preset": "synthetic"})
    tried = {"adamw": {"0.001": 2.5, "0.003": 2.7}, "muon": {"0.02": 2.4}}
    chosen = {name: LRS[name] for name in base_optimizers(study)}
    write_json(folder.lrs, {"chosen": chosen, "tried": tried, "extended": [], "given": {}})
    grid = runs(study)
    for cell in grid if finished else grid[: len(grid) // 2]:
        header = {"name": cell.name, "cell": dataclasses.asdict(cell), "config": {}, "tokens_per_step": 256,
                  "updates_per_step": 1}  # fmt: skip
        folder.write_run(folder.run_path(cell.name), header, curve(study, cell))
    if finished:
        _report(study, folder)
    return folder


def _report(study: StudyConfig, folder: StudyFolder) -> None:
    """The tables and predicted.json, as pipesim/commands/study_report.py writes them."""
    records = {cell.name: folder.read_run(folder.run_path(source(study, cell).name)) for cell in cells(study)}
    times = {(c.schedule, c.stages, c.variant): STEP_TIME[c.schedule] for c in cells(study)}
    cpu = {(c.schedule, c.variant, c.stages): CPU_STEP_TIME for c in cells(study)}
    rows = result_rows(
        study, records, read_json(folder.lrs)["chosen"], find_target(study, records), times, cpu
    )
    write_atomic(folder.path / "results.csv", csv_text(rows, COLUMNS))
    write_atomic(folder.path / "summary.csv", csv_text(summary_rows(rows, study.reference), SUMMARY_COLUMNS))
    predicted = {f"{s}-p{p}-{v}": t for (s, p, v), t in times.items()}
    write_json(
        folder.predicted, {"model": "gpt3-1.3b", "device": "h100-sxm", "devices": 8, "step_time_s": predicted}
    )

"""Study folders (`pipesim study --out DIR`), read only: which there are, how far they got, what they found.

    for folder in find_studies(Path("runs")):
        state = read_study(folder)          # StudyState: not a study, empty, in progress or finished
    analysis = analyse(folder)              # the study's config, run records, target and step times
    figures = study_plots(analysis, summary, schedules=..., variants=..., depths=...)

docs/study/README.md describes the folder. read_study needs plain json and csv only: study.json,
lrs.json, the run files' first and last lines, results.csv and summary.csv (the tables the command
wrote, shown as they are). analyse and study_plots go through executor.study, whose grid imports torch:
they import it when called, so the dashboard starts, and its other pages run, without torch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dashboard.rundirs import STUDY

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from executor.study.grid import StudyConfig
    from executor.study.store import RunRecord

SETTINGS = STUDY  # study.json: its settings, and what makes a folder a study
LRS, RESULTS, SUMMARY, PREDICTED = "lrs.json", "results.csv", "summary.csv", "predicted.json"
Status = Literal["missing", "not a study", "empty", "in progress", "finished"]


@dataclass(frozen=True, kw_only=True)
class StudyState:
    """What the Study page knows about one folder without the executor."""

    path: Path
    status: Status
    """missing (no such folder), not a study (no readable study.json), empty (no run has finished),
    in progress (runs have finished, results.csv is not written yet), finished."""
    problem: str = ""
    """Why the folder is not a study, in one line."""
    settings: dict[str, Any] = field(default_factory=dict)
    """study.json's "study" object (StudyConfig.to_dict())."""
    preset: str = ""
    """study.json's "preset"."""
    lrs: dict[str, Any] = field(default_factory=dict)
    """lrs.json: chosen, tried, extended, given (empty while the sweep runs)."""
    sweep_runs: int = 0
    """Files under sweep/: the lr sweep's finished runs."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """One row per finished file under runs/: its cell and how it ended."""
    results: list[dict[str, Any]] = field(default_factory=list)
    """results.csv's rows (numbers as numbers, empty cells as None)."""
    summary: list[dict[str, Any]] = field(default_factory=list)
    """summary.csv's rows."""


def is_study(folder: Path) -> bool:
    return (folder / SETTINGS).is_file()


def find_studies(root: Path) -> list[Path]:
    """Study folders: `root` itself if it is one, else its subfolders that are (two levels deep), sorted."""
    if not root.is_dir():
        return []
    if is_study(root):
        return [root]
    found = []
    for child in sorted(path for path in root.iterdir() if path.is_dir()):
        if is_study(child):
            found.append(child)
        else:
            found.extend(sorted(grandchild for grandchild in child.iterdir() if is_study(grandchild)))
    return found


def stamp(folder: Path) -> tuple[tuple[str, float, int], ...]:
    """(file, mtime, size) of what read_study reads, and runs/'s mtime and file count (a finished run
    appears by a rename): a cache key that changes as the study goes on."""
    entries = []
    for name in (SETTINGS, LRS, RESULTS, SUMMARY, PREDICTED):
        path = folder / name
        if path.is_file():
            info = path.stat()
            entries.append((name, info.st_mtime, info.st_size))
    for name in ("runs", "sweep"):
        if (folder / name).is_dir():
            entries.append((name, (folder / name).stat().st_mtime, len(list((folder / name).iterdir()))))
    return tuple(entries)


def read_study(folder: Path) -> StudyState:
    """Everything the Study page shows before it analyses the runs (never raises for a bad file)."""
    if not folder.is_dir():
        return StudyState(path=folder, status="missing", problem=f"no folder {folder}")
    if not is_study(folder):
        return StudyState(
            path=folder,
            status="not a study",
            problem=f"{folder} is not a study folder: it has no {SETTINGS} "
            "(`pipesim study --out DIR` makes one)",
        )
    saved = _json(folder / SETTINGS)
    if not isinstance(saved, dict) or not isinstance(saved.get("study"), dict):
        return StudyState(
            path=folder, status="not a study", problem=f'{folder / SETTINGS}: no "study" object'
        )
    runs = [_run_row(path) for path in sorted((folder / "runs").glob("*.jsonl"))]
    finished = (folder / RESULTS).is_file() and (folder / SUMMARY).is_file()
    status: Status = "finished" if finished else ("in progress" if runs else "empty")
    lrs = _json(folder / LRS)
    return StudyState(
        path=folder,
        status=status,
        settings=saved["study"],
        preset=str(saved.get("preset", "")),
        lrs=lrs if isinstance(lrs, dict) else {},
        sweep_runs=len(list((folder / "sweep").glob("*.jsonl"))),
        runs=runs,
        results=read_table(folder / RESULTS) if finished else [],
        summary=read_table(folder / SUMMARY) if finished else [],
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _run_row(path: Path) -> dict[str, Any]:
    """A finished run file's cell and end (its first and last lines), or what is wrong with it."""
    row: dict[str, Any] = {"run": path.stem}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header, end = json.loads(lines[0]), json.loads(lines[-1])
        cell = header["cell"]
    except (OSError, UnicodeDecodeError, ValueError, IndexError, KeyError, TypeError):
        return {**row, "problem": "not a study run file"}
    for key in ("schedule", "variant", "stages", "seed", "lr_rule", "lr_scale"):
        row[key] = cell.get(key)
    for key in ("final_val_loss", "best_val_loss", "diverged_at", "wall_s"):
        row[key] = end.get(key)
    return row


def read_table(path: Path) -> list[dict[str, Any]]:
    """A CSV the study wrote, with whole numbers as int, other numbers as float and empty cells as None."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [{key: typed(value) for key, value in row.items()} for row in csv.DictReader(io.StringIO(text))]


def typed(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def lr_rows(lrs: dict[str, Any]) -> list[dict[str, Any]]:
    """lrs.json as a table: per optimizer, the lr chosen and the final loss of every lr tried."""
    tried, given = lrs.get("tried", {}), lrs.get("given", {})
    rows = []
    for name, lr in lrs.get("chosen", {}).items():
        losses = tried.get(name, {})
        shown = ", ".join(f"{k}: {'diverged' if v is None else f'{v:.4f}'}" for k, v in losses.items())
        rows.append({"optimizer": name, "lr": lr, "tried (lr: final val loss)": shown or "given (--lr)"})
    for name, lr in given.items():
        if name not in lrs.get("chosen", {}):
            rows.append({"optimizer": name, "lr": lr, "tried (lr: final val loss)": "given (--lr)"})
    return rows


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """A finished study read through executor.study: what its plots and its target need."""

    study: StudyConfig
    records: dict[str, RunRecord]
    """Every cell's run (a depth-free cell's is the smallest depth's run), by cell name."""
    target: float
    target_how: str
    """Where the target comes from, in words."""
    step_times: dict[tuple[str, int, str], float]
    """Predicted step time in seconds by (schedule, P, variant), from predicted.json."""
    machine: str
    """What the prediction is for, e.g. 'gpt3-1.3b on 8 x h100-sxm'."""
    total_runs: int
    """Runs the grid makes (each depth-free cell once)."""


def grid_size(settings: dict[str, Any]) -> int | None:
    """How many run files a finished study holds (None when study.json does not make a StudyConfig)."""
    from executor.study.grid import StudyConfig, runs  # torch: only when a study is shown
    from schedules.errors import UserError

    try:
        return len(runs(StudyConfig.from_dict(settings)))
    except (UserError, TypeError, ValueError, KeyError):
        return None


def analyse(folder: Path) -> Analysis:
    """Read every run of a finished study; raises ExecutorConfigError (one line) for a bad file."""
    from executor.study.analysis import find_target
    from executor.study.grid import StudyConfig, cells, runs, source
    from executor.study.store import StudyFolder, read_json

    study = StudyConfig.from_dict(read_json(folder / SETTINGS)["study"])
    store = StudyFolder(folder)
    records = {cell.name: store.read_run(store.run_path(source(study, cell).name)) for cell in cells(study)}
    target = find_target(study, records)
    predicted = _json(folder / PREDICTED) or {}
    saved = predicted.get("step_time_s", {})
    step_times = {
        (c.schedule, c.stages, c.variant): saved[f"{c.schedule}-p{c.stages}-{c.variant}"]
        for c in cells(study)
        if f"{c.schedule}-p{c.stages}-{c.variant}" in saved
    }
    machine = (
        f"{predicted.get('model', '?')} on {predicted.get('devices', '?')} x {predicted.get('device', '?')}"
    )
    return Analysis(
        study=study,
        records=records,
        target=target.value,
        target_how=target.how,
        step_times=step_times,
        machine=machine,
        total_runs=len(runs(study)),
    )


def study_plots(
    analysis: Analysis,
    summary: list[dict[str, Any]],
    *,
    schedules: tuple[str, ...],
    variants: tuple[str, ...],
    depths: tuple[int, ...],
) -> dict[str, go.Figure]:
    """The command's three plots (executor.study.figures) of the chosen part of the grid. The reference
    schedule is always drawn: it is what every gap is measured against."""
    from executor.study.figures import study_figures

    study = analysis.study
    shown = dataclasses.replace(
        study,
        schedules=(study.reference, *(s for s in study.schedules[1:] if s in schedules)),
        variants=tuple(v for v in study.variants if v in variants),
        depths=tuple(p for p in study.depths if p in depths),
    )
    rows = [
        row
        for row in summary
        if row["schedule"] in shown.schedules
        and row["optimizer"] in shown.variants
        and row["stages"] in shown.depths
    ]
    return study_figures(shown, analysis.records, rows, analysis.step_times, analysis.machine)

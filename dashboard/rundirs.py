"""Run folders (`pipesim run --out DIR`), read only: which there are, their config, metrics and trace.

    for folder in find_runs(Path("runs")):
        run = read_run(folder)              # RunInfo: config, metrics rows, trace path, in progress?
    rows, torn = parse_metrics(text)        # metrics.jsonl, tolerating a half-written last line

Reads config.json, metrics.jsonl and trace.json with plain json and nothing else of a run folder (its
other files belong to the executor and may change). Nothing here writes anywhere.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNS_VARIABLE = "PIPESIM_RUNS"
"""Environment variable through which `pipesim dashboard --runs DIR` hands the runs folder to the app."""
CONFIG, METRICS, TRACE = "config.json", "metrics.jsonl", "trace.json"
STUDY = "study.json"
"""What marks a study folder (`pipesim study --out DIR`, dashboard/studies.py): not a run folder."""
LIVE_SECONDS = 600.0
"""A run without trace.json whose metrics.jsonl changed this recently is taken to be still running
(the executor writes trace.json when a run ends, also when it fails)."""


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What the dashboard knows about one run folder."""

    name: str
    """The folder's path relative to the runs folder."""
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    """config.json's "config" object (empty if missing or unreadable)."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """metrics.jsonl's objects, in file order."""
    torn: bool = False
    """The last line of metrics.jsonl was incomplete (being written) and was left out."""
    bad_lines: int = 0
    """Other lines that were not JSON objects, left out."""
    has_trace: bool = False
    """trace.json is there (the run ended)."""
    modified: float | None = None
    """When metrics.jsonl last changed (seconds since the epoch), None without one."""
    problem: str = ""
    """Why config.json could not be read, if it could not."""

    def live(self, now: float | None = None) -> bool:
        """No trace.json yet and metrics.jsonl changed within LIVE_SECONDS: the run is in progress.
        (Asked at the moment of showing, not when the folder was read: a cached read must not keep a
        run that stopped writing "running" for ever.)"""
        if self.has_trace or self.modified is None:
            return False
        return (time.time() if now is None else now) - self.modified < LIVE_SECONDS


def is_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in (CONFIG, METRICS, TRACE))


def find_runs(root: Path) -> list[Path]:
    """Run folders: `root` itself if it is one, else its subfolders that are (two levels deep), sorted."""
    if not root.is_dir():
        return []
    if is_run(root):
        return [root]
    found = []
    for child in sorted(root.iterdir()):
        if is_run(child):
            found.append(child)
        elif child.is_dir():
            found.extend(grandchild for grandchild in sorted(child.iterdir()) if is_run(grandchild))
    return found


def parse_metrics(text: str) -> tuple[list[dict[str, Any]], bool, int]:
    """metrics.jsonl's objects, whether its last line was torn (no newline yet, not JSON), and how many
    other lines were not JSON objects."""
    lines = text.split("\n")
    torn = False
    if lines and lines[-1].strip():  # no newline at the end: the writer is mid-line
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            torn = True
            lines = lines[:-1]
    rows, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, torn, bad


def read_run(folder: Path, *, root: Path | None = None) -> RunInfo:
    """Everything the Runs page shows of one folder (never raises for a bad file: says so instead)."""
    config, problem = _config(folder / CONFIG)
    metrics_file = folder / METRICS
    rows, torn, bad = ([], False, 0)
    if metrics_file.is_file():
        rows, torn, bad = parse_metrics(metrics_file.read_text(encoding="utf-8", errors="replace"))
    name = str(folder.relative_to(root)) if root is not None and folder != root else folder.name
    return RunInfo(
        name=name,
        path=folder,
        config=config,
        metrics=rows,
        torn=torn,
        bad_lines=bad,
        has_trace=(folder / TRACE).is_file(),
        modified=metrics_file.stat().st_mtime if metrics_file.is_file() else None,
        problem=problem,
    )


def _config(path: Path) -> tuple[dict[str, Any], str]:
    if not path.is_file():
        return {}, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return {}, f"{path.name}: unreadable ({error})"
    config = data.get("config") if isinstance(data, dict) else None
    return (config, "") if isinstance(config, dict) else ({}, f'{path.name}: no "config" object')


def stamp(folder: Path) -> tuple[tuple[str, float, int], ...]:
    """(file, mtime, size) of the files the dashboard reads: a cache key that changes as a run grows."""
    entries = []
    for name in (CONFIG, METRICS, TRACE):
        path = folder / name
        if path.is_file():
            info = path.stat()
            entries.append((name, info.st_mtime, info.st_size))
    return tuple(entries)


def summary(run: RunInfo, now: float | None = None) -> dict[str, Any]:
    """One row of the Runs page's table."""
    config, rows = run.config, run.metrics
    optimizer = config.get("optimizer")
    losses = [row["loss"] for row in rows if isinstance(row.get("loss"), (int, float))]
    validation = [row["val_loss"] for row in rows if isinstance(row.get("val_loss"), (int, float))]
    speeds = sorted(row["tokens_per_s"] for row in rows if isinstance(row.get("tokens_per_s"), (int, float)))
    status = "running" if run.live(now) else ("finished" if run.has_trace else "stopped (no trace.json)")
    return {
        "run": run.name,
        "status": status,
        "schedule": config.get("schedule", "?"),
        "P": config.get("stages", "?"),
        "m": config.get("microbatches", "?"),
        "optimizer": optimizer.get("name", "?") if isinstance(optimizer, dict) else "?",
        "model": config.get("model", "?"),
        "steps": f"{len(rows)} / {config.get('steps', '?')}",
        "last loss": round(losses[-1], 4) if losses else None,
        "best val loss": round(min(validation), 4) if validation else None,
        "tokens/s (median)": round(speeds[len(speeds) // 2]) if speeds else None,
    }


def trace_files(runs: Path, recorded: Path | None = None) -> dict[str, Path]:
    """Traces the Compare page offers, by label: every `*.json` under the runs folder and its
    subfolders (a run folder's trace.json among them; config.json and Chrome exports left out), then the
    recordings under `recorded` (traces/recorded/<name>/measured.json, predicted.json). A study
    folder's JSON files (study.json beside them: `pipesim study --out`) are not traces."""
    found: dict[str, Path] = {}
    if runs.is_dir():
        for path in [*sorted(runs.glob("*.json")), *sorted(runs.glob("*/*.json"))]:
            study = (path.parent / STUDY).is_file()
            if path.name != CONFIG and not path.name.endswith(".chrome.json") and not study:
                found[path.relative_to(runs).as_posix()] = path
    if recorded is not None and recorded.is_dir():
        for path in sorted(recorded.glob("*/*.json")):
            if path.stem in ("measured", "predicted"):
                found[f"recorded/{path.relative_to(recorded).as_posix()}"] = path
    return found

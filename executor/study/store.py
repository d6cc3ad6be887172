"""The study folder: one JSONL per run, written whole and atomically, so a file that exists is complete.

    folder = StudyFolder("study/quick")
    folder.write_run(folder.run_path(cell), header, curve)     # temp file + rename
    record = folder.read_run(folder.run_path(cell))            # RunRecord: header, steps, end
    folder.finished(path, config_dict)                         # True: never run it again

Layout (docs/study/README.md is the reader's description, for the dashboard and for people):

    study.json               the study's settings (StudyConfig) and how its times are predicted
    lrs.json                 the learning rate chosen per optimizer, and every sweep run's loss
    sweep/NAME-lrLR.jsonl    the lr sweep's runs (the reference at the smallest depth)
    runs/NAME.jsonl          one per cell: a "run" line, one "step" line per step, an "end" line
    timing/NAME.json         a schedule's step time on this CPU (fitted from a short measured run)
    predicted.json           step times the simulator predicts at scale
    results.csv/.md, summary.csv/.md, plots/

Resuming is "skip what exists": a run's file appears only when its run has finished (write_atomic), and
an interrupted run leaves at most a hidden temporary file, which the next invocation removes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.errors import ExecutorConfigError
from executor.run.runconfig import RunConfig
from executor.study.train import Curve
from schedules.fileio import write_atomic

FORMAT = 1
"""Version of the study folder's files."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run's file, read back."""

    header: dict[str, Any]
    """The "run" line: name, cell, config (RunConfig.to_dict()), updates_per_step, tokens_per_step."""
    steps: tuple[dict[str, Any], ...]
    """The "step" lines in order: step, loss and, where measured, val_loss (null: not finite)."""
    end: dict[str, Any]
    """The "end" line: wall_s, diverged_at, final_val_loss, best_val_loss."""

    def vals(self) -> list[tuple[int, float | None]]:
        return [(line["step"], line["val_loss"]) for line in self.steps if "val_loss" in line]


class StudyFolder:
    """Paths of one study folder, and its run files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    settings = property(lambda self: self.path / "study.json")
    lrs = property(lambda self: self.path / "lrs.json")
    predicted = property(lambda self: self.path / "predicted.json")
    plots = property(lambda self: self.path / "plots")
    lock_file = property(lambda self: self.path / "lock")

    def run_path(self, name: str) -> Path:
        return self.path / "runs" / f"{name}.jsonl"

    def sweep_path(self, name: str, lr: float) -> Path:
        return self.path / "sweep" / f"{name}-lr{lr:g}.jsonl"

    def timing_path(self, name: str) -> Path:
        return self.path / "timing" / f"{name}.json"

    def remove_leftovers(self) -> int:
        """Delete the temporary files of writes an interruption cut short; returns how many."""
        leftovers = [p for p in self.path.rglob(".*.tmp") if p.is_file()] if self.path.exists() else []
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def claim(self, settings: dict[str, Any]) -> None:
        """Write study.json, or check that the one there has the same settings (else a one-line error)."""
        if self.settings.exists():
            saved = read_json(self.settings)
            difference = first_difference(saved.get("study", {}), settings["study"], "")
            if difference or saved.get("format") != FORMAT:
                raise ExecutorConfigError(
                    f"--out {self.path} holds a study with other settings ({difference or 'format'}); "
                    "choose another --out, or give the same settings to continue it"
                )
            return
        write_json(self.settings, {**settings, "format": FORMAT})

    def finished(self, path: Path, config: dict[str, Any]) -> bool:
        """Whether `path` holds this run already; a file of another run there is a one-line error."""
        if not path.exists():
            return False
        header = self.read_run(path).header
        difference = first_difference(
            training_identity(header.get("config", {})), training_identity(config), ""
        )
        if difference:
            raise ExecutorConfigError(f"{path} was run with other settings ({difference}); remove it")
        return True

    @staticmethod
    def write_run(path: Path, header: dict[str, Any], curve: Curve) -> None:
        write_atomic(path, run_text(header, curve))

    @staticmethod
    def read_run(path: Path) -> RunRecord:
        try:
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            kinds = [line["kind"] for line in lines]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ExecutorConfigError(f"{path}: not a study run file ({error})") from None
        if len(lines) < 2 or kinds[0] != "run" or kinds[-1] != "end":
            raise ExecutorConfigError(f"{path}: not a study run file (no run or end line)")
        return RunRecord(header=lines[0], steps=tuple(lines[1:-1]), end=lines[-1])


def run_text(header: dict[str, Any], curve: Curve) -> str:
    """The JSONL of a run: its header, a line per step (with val_loss where measured), an end line."""
    vals = dict(curve.vals)
    steps = [
        {"kind": "step", "step": k, "loss": loss, **({"val_loss": vals[k]} if k in vals else {})}
        for k, loss in enumerate(curve.losses)
    ]
    finite = [v for _, v in curve.vals if v is not None]
    last = curve.vals[-1][1] if curve.vals and curve.diverged_at is None else None
    end = {
        "kind": "end",
        "wall_s": round(curve.wall_s, 3),
        "diverged_at": curve.diverged_at,
        "final_val_loss": last,
        "best_val_loss": min(finite) if finite and curve.diverged_at is None else None,
    }
    lines = [{"kind": "run", **header}, *steps, end]
    return "".join(json.dumps(line, sort_keys=True, allow_nan=False) + "\n" for line in lines)


def training_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's numbers: the config without where it wrote and how it was launched, with
    fields added since the file was written at their defaults (so an older study still resumes)."""
    try:
        return RunConfig.from_dict(config).identity()
    except (ExecutorConfigError, TypeError, ValueError):
        return config


def first_difference(old: Any, new: Any, where: str) -> str:
    """'' when equal, else the first differing field as 'a.b: OLD there, NEW here'."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return ""
    if isinstance(old, float) and isinstance(new, float) and math.isclose(old, new, rel_tol=1e-12):
        return ""
    return "" if old == new else f"{where}: {old!r} there, {new!r} here"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ExecutorConfigError(f"{path}: not readable JSON ({error})") from None


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")

"""Recorded runs as regression tests: what a recording holds, and the three checks a replay makes.

    recording = read_recording("traces/recorded/1f1b-p2-m4")
    report = check_recording(recording, schedule=schedule_of(recording.measured.schedule),
                             prediction_text=dumps_trace(simulate(...).trace()))
    report.passed, report.format()

A recording is a folder (traces/recorded/NAME/):

    measured.json     a trace that `pipesim run` measured on this project's CPU machine (never re-recorded)
    command.txt       the exact `pipesim run` command that made it
    costs.toml        the cost file `pipesim calibrate` fitted from it
    predicted.json    the simulator's trace of the same schedule with those costs
    recording.json    {"tolerance": {"step_time": 0.05, "utilization": 0.05}, "recorded": "date", ...}

and a replay checks that (1) today's generators and passes still emit the action order the run ran,
(2) simulating with the recorded costs gives the recorded prediction byte for byte, and (3) the recorded
prediction is within the recording's tolerance of the measurement. `pipesim replay` does the I/O and the
simulation (traces/ never imports the simulator); this module only compares.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedules.ir import SEND_KINDS, Action, Schedule
from traces.compare import compare_traces
from traces.io import read_trace
from traces.metrics import compute_metrics, executed_schedule
from traces.schema import Trace, TraceError

MEASURED, COMMAND, COSTS, PREDICTED, MANIFEST = (
    "measured.json",
    "command.txt",
    "costs.toml",
    "predicted.json",
    "recording.json",
)
DEFAULT_TOLERANCE = {"step_time": 0.05, "utilization": 0.05}
"""Relative step-time error and utilization error (fraction) a recorded prediction may have."""
WATCHED = ("step_time", "makespan", "bubble_fraction", "utilization", "peak_memory", "delay", "mismatches")
"""The metrics a replay reports when a new prediction moves them."""


@dataclass(frozen=True, kw_only=True)
class Recording:
    """One recorded run and what was predicted for it."""

    path: Path
    measured: Trace
    predicted: Trace
    predicted_text: str
    """predicted.json as stored (the byte-for-byte check compares against it)."""
    tolerance: dict[str, float]
    command: str


@dataclass(frozen=True, kw_only=True)
class ReplayReport:
    """What a replay found for one recording; empty lists mean the check passed."""

    path: Path
    order_differences: list[tuple[int, int, str | None, str | None]] = field(default_factory=list)
    """(rank, position, recorded action, today's action): the first difference per rank."""
    moved: list[tuple[str, Any, Any]] = field(default_factory=list)
    """(metric, recorded prediction, new prediction) where a re-simulation differs."""
    prediction_identical: bool = True
    """The re-simulation gave the recorded prediction byte for byte."""
    accuracy: list[str] = field(default_factory=list)
    """Where the recorded prediction is outside the tolerance of the measurement."""

    @property
    def passed(self) -> bool:
        return not self.order_differences and self.prediction_identical and not self.accuracy

    def format(self) -> str:
        lines = [f"{self.path}: {'ok' if self.passed else 'FAILED'}"]
        for rank, position, recorded, today in self.order_differences:
            lines.append(
                f"  order: rank {rank}, position {position}: the run ran {recorded or '(nothing)'}, "
                f"today's schedule has {today or '(nothing)'}"
            )
        if not self.prediction_identical:
            lines.append("  prediction: re-simulating with the recorded costs no longer gives predicted.json")
            lines += [
                f"    {name}: recorded {old}, now {new}"
                if name != "meta"
                else f"    the events are identical; the meta differs in {new}"
                for name, old, new in self.moved
            ]
        lines += [f"  accuracy: {problem}" for problem in self.accuracy]
        return "\n".join(lines)


def read_recording(path: str | Path) -> Recording:
    """Load a recording folder; TraceError naming the file for anything missing or malformed."""
    folder = Path(path)
    if not folder.is_dir():
        raise TraceError(f"{folder}: not a recording folder")
    for name in (MEASURED, COMMAND, COSTS, PREDICTED, MANIFEST):
        if not (folder / name).is_file():
            raise TraceError(f"{folder}: no {name} (a recording holds {MEASURED}, {COMMAND}, {COSTS}, ...)")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        tolerance = {**DEFAULT_TOLERANCE, **manifest.get("tolerance", {})}
        tolerance = {key: float(value) for key, value in tolerance.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise TraceError(f"{folder / MANIFEST}: not a recording manifest ({error})") from None
    return Recording(
        path=folder,
        measured=read_trace(folder / MEASURED),
        predicted=read_trace(folder / PREDICTED),
        predicted_text=(folder / PREDICTED).read_text(encoding="utf-8"),
        tolerance=tolerance,
        command=(folder / COMMAND).read_text(encoding="utf-8").strip(),
    )


def recordings_under(paths: list[str]) -> list[Path]:
    """Each path is a recording, or a folder whose sub-folders are (sorted); TraceError if none."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if (path / MANIFEST).is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(child for child in path.iterdir() if (child / MANIFEST).is_file())
        else:
            raise TraceError(f"{path}: no such recording or folder of recordings")
    if not found:
        raise TraceError(f"no recordings (folders with a {MANIFEST}) under {', '.join(paths)}")
    return found


def check_recording(
    recording: Recording, *, schedule: Schedule, prediction: Trace, prediction_text: str
) -> ReplayReport:
    """The three checks, given today's schedule for the recorded configuration and today's prediction
    (the recorded costs simulated now)."""
    report = ReplayReport(path=recording.path)
    report.order_differences.extend(order_differences(recording.measured, schedule))
    if prediction_text != recording.predicted_text:
        report = _with_moves(report, recording.predicted, prediction)
    report.accuracy.extend(accuracy_problems(recording.measured, recording.predicted, recording.tolerance))
    return report


def program_order(actions: tuple[Action, ...] | list[Action]) -> list[Action]:
    """A rank's actions as a trace records their order: everything but sends in order, then the sends."""
    return [a for a in actions if a.kind not in SEND_KINDS] + [a for a in actions if a.kind in SEND_KINDS]


def order_differences(measured: Trace, schedule: Schedule) -> list[tuple[int, int, str | None, str | None]]:
    """Rank by rank, the first position where the run's order differs from the schedule's."""
    ran = executed_schedule(measured).actions
    out = []
    for rank, (recorded, today) in enumerate(zip(ran, schedule.actions, strict=True)):
        planned = program_order(today)
        for position in range(max(len(recorded), len(planned))):
            old = recorded[position] if position < len(recorded) else None
            new = planned[position] if position < len(planned) else None
            if old != new:
                out.append((rank, position, _text(old), _text(new)))
                break
    return out


def _text(action: Action | None) -> str | None:
    return None if action is None else str(action)


def _with_moves(report: ReplayReport, recorded: Trace, now: Trace) -> ReplayReport:
    old, new = compute_metrics(recorded).to_dict(), compute_metrics(now).to_dict()
    moved = [(name, old[name], new[name]) for name in WATCHED if old[name] != new[name]]
    if len(recorded.events) != len(now.events):
        moved.append(("events", len(recorded.events), len(now.events)))
    elif recorded.events == now.events:  # the same timeline: only the provenance changed
        keys = sorted(_changed_keys(recorded.meta, now.meta))
        moved.append(("meta", None, ", ".join(keys) or "(order)"))
    return ReplayReport(
        path=report.path, order_differences=report.order_differences, moved=moved, prediction_identical=False
    )


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(prefix + key)
    return keys


def accuracy_problems(measured: Trace, predicted: Trace, tolerance: dict[str, float]) -> list[str]:
    """Step time and every rank's utilization against the tolerance; delay per stage must be equal."""
    comparison = compare_traces(measured, predicted)
    problems = []
    step = comparison.scalar("step_time").rel_error
    if step is None or math.isinf(step) or abs(step) > tolerance["step_time"]:
        problems.append(f"step time off by {step:+.1%} (tolerance {tolerance['step_time']:.0%})")
    for rank, pair in enumerate(comparison.per_index("utilization")):
        error = pair.abs_error or 0.0
        if abs(error) > tolerance["utilization"]:
            problems.append(
                f"rank {rank} utilization off by {error * 100:+.1f} points "
                f"(tolerance {tolerance['utilization'] * 100:.0f})"
            )
    if not comparison.delay_equal:
        problems.append(f"delay per stage {comparison.b.delay}, the run had {comparison.a.delay}")
    return problems

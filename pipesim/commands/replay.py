"""`pipesim replay`: check recorded runs against today's schedules and simulator (regression tests).

    pipesim replay traces/recorded                      # every recording under the folder
    pipesim replay traces/recorded/1f1b-p2-m4           # one
    pipesim replay traces/recorded --update             # re-fit and re-predict (an intended change)
    pipesim replay --record traces/recorded/NAME --from runs/a     # make a recording of a finished run

Exit 0 when every recording passes, 1 when one fails (with the first differing action per rank and the
metrics that moved), 2 for a bad file. `--update` re-records the cost files and predictions, never the
measurements. What a recording holds and checks: traces/replay.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
from pathlib import Path

from pipesim.commands.calibrate import fit_cost_file
from pipesim.errors import UsageError
from schedules.fileio import write_atomic
from simulator.costfile import loads_costs
from traces.io import dumps_trace, load_trace
from traces.replay import (
    COMMAND,
    COSTS,
    DEFAULT_TOLERANCE,
    MANIFEST,
    MEASURED,
    PREDICTED,
    check_recording,
    read_recording,
    recordings_under,
)
from traces.schema import Trace, schedule_of


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="check recorded runs against today's schedules and simulator (regression tests)",
        description="Replay recorded runs: same action order, same prediction byte for byte, prediction "
        "within tolerance of the measurement.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="recordings, or folders of recordings")
    parser.add_argument(
        "--update", action="store_true", help="re-fit costs.toml and re-predict predicted.json (not measured)"
    )
    parser.add_argument(
        "--record", metavar="DIR", help="make a recording in DIR from the run given by --from"
    )
    parser.add_argument("--from", dest="run", metavar="RUN", help="with --record: a finished run folder")
    parser.add_argument(
        "--tolerance",
        metavar="STEP,UTIL",
        help="with --record: the step-time error (fraction) and utilization error (points / 100) the "
        "recorded prediction may have (default 0.05,0.05)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.record or args.run:
        if not (args.record and args.run) or args.paths or args.update:
            raise UsageError("--record DIR --from RUN makes one recording (and takes nothing else)")
        print(record(Path(args.record), args.run, tolerance(args.tolerance)))
        return 0
    if args.tolerance:
        raise UsageError("--tolerance goes with --record (a recording keeps its own in recording.json)")
    if not args.paths:
        raise UsageError("give the recordings to replay (e.g. traces/recorded)")
    failed = 0
    for path in recordings_under(args.paths):
        if args.update:
            update(path)
        report = replay(path)
        failed += not report.passed
        print(report.format())
    total = len(recordings_under(args.paths))
    print(f"{total - failed} of {total} recordings pass")
    return 1 if failed else 0


def predict_text(measured: Trace, costs_path: Path) -> tuple[Trace, str]:
    """Today's prediction of a recorded run: its schedule simulated with the recorded cost file."""
    from simulator.simulation import simulate  # SimPy loads here, not when the CLI lists its commands

    costs = loads_costs(costs_path.read_text(encoding="utf-8"), source=COSTS)  # the same bytes from anywhere
    trace = simulate(schedule_of(measured.schedule), costs, meta={"costs": COSTS}).trace()
    return trace, dumps_trace(trace)


def replay(path: Path):
    recording = read_recording(path)
    prediction, text = predict_text(recording.measured, path / COSTS)
    schedule = schedule_of(recording.measured.schedule)
    return check_recording(recording, schedule=schedule, prediction=prediction, prediction_text=text)


def update(path: Path) -> None:
    """Re-fit the cost file from the (unchanged) measurement and re-predict."""
    measured = load_trace(path / MEASURED)
    _, costs = fit_cost_file(measured, source=MEASURED)
    write_atomic(path / COSTS, costs)
    _, text = predict_text(measured, path / COSTS)
    write_atomic(path / PREDICTED, text)


def tolerance(text: str | None) -> dict[str, float]:
    """--tolerance STEP,UTIL as recording.json's tolerance."""
    if text is None:
        return dict(DEFAULT_TOLERANCE)
    try:
        step, utilization = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--tolerance takes two fractions, e.g. 0.05,0.05, got {text!r}") from None
    if not (0 < step < 1 and 0 < utilization < 1):
        raise UsageError(f"--tolerance {text}: both must be fractions between 0 and 1")
    return {"step_time": step, "utilization": utilization}


def record(folder: Path, run: str, tolerance: dict[str, float]) -> str:
    """A new recording of a finished run folder: its trace, command, fitted costs and prediction."""
    source = Path(run)
    measured = load_trace(source)
    if measured.source != "measured" or not measured.meta.get("completed", False):
        raise UsageError(f"--from {run}: not a completed measured run")
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"--record {folder}: exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "trace.json" if source.is_dir() else source, folder / MEASURED)
    write_atomic(folder / COMMAND, run_command(measured.meta.get("config") or {}) + "\n")
    manifest = {
        "recorded": datetime.date.today().isoformat(),
        "tolerance": tolerance,
        "machine": measured.meta.get("device", "cpu"),
    }
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    update(folder)
    return replay(folder).format()


ALWAYS = frozenset({"schedule", "stages", "microbatches", "steps"})
"""Fields the command always names, default or not: what a reader looks for first."""


def run_command(config: dict) -> str:
    """The `pipesim run` command of a run's config: the schedule and its size, and every flag that
    differs from the defaults (its --out left out: where a re-run writes is the reader's choice)."""
    from pipesim.commands.run import FLAGS

    defaults = _defaults()
    parts = ["pipesim run"]
    for flag, name, _, _ in FLAGS:
        value, default = _field(config, name), _field(defaults, name)
        if value is not None and (value != default or name in ALWAYS):
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{flag} {text}")
    return " ".join(parts)


def _defaults() -> dict:
    from executor.run.runconfig import RunConfig

    return RunConfig().to_dict()


def _field(config: dict, name: str):
    for part in name.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config

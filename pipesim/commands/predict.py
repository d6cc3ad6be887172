"""`pipesim predict --from MEASURED --schedule S`: what-if, from a run you measured.

    pipesim predict --from runs/1f1b --schedule 2bw                 # "I measured 1F1B; what will 2BW give?"
    pipesim predict --from runs/1f1b --schedule gpipe,2bw -m 16     # other schedules and another m
    pipesim predict --from runs/2bw --schedule pipedream --json

The measured run is calibrated (as `pipesim calibrate` does) and its per-stage costs, host times, link,
warm-up and memory sizes are carried over to the target schedules on the same stages and hardware: same
P and the same layer split. Another P (`-p`) cuts the model into other stages: the run's measured speed
per unit of analytic work carries over instead (simulator/rescale.py), for runs whose trace names the
model it trained (the executor's do). A zero-bubble target (zb-h1) needs the split backward's W share:
a run without one takes W = B / 2 (said in the notes).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipesim.commands.calibrate import fit_cost_file
from pipesim.commands.schedules import format_table, number
from pipesim.commands.simulate import schedule_names, seconds, size
from pipesim.errors import UsageError
from schedules.fileio import check_writable
from schedules.ir import Kind, Schedule
from schedules.registry import get_info
from simulator.costfile import loads_costs
from simulator.costs import CostModel
from simulator.units import CostError
from traces.calibrate import shared_cpus
from traces.compare import Pair
from traces.io import load_trace, write_trace
from traces.metrics import Metrics, compute_metrics
from traces.schema import Trace


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="what-if: calibrate on a measured run, predict other schedules or m on the same hardware",
        description="Calibrate on a measured run and predict other schedules (or another m) on the same "
        "stages and hardware.",
    )
    parser.add_argument(
        "--from", dest="measured", required=True, metavar="MEASURED", help="a measured trace or run folder"
    )
    parser.add_argument("--schedule", required=True, metavar="NAMES", help="one or a comma list of schedules")
    parser.add_argument(
        "-p",
        "--ranks",
        "--stages",
        dest="stages",
        type=int,
        metavar="P",
        help="ranks (default: the run's; another P re-splits the model)",
    )
    parser.add_argument(
        "-m", "--microbatches", type=int, metavar="M", help="microbatches per step (default: the run's)"
    )
    parser.add_argument("--steps", type=int, metavar="K", help="optimizer steps (default: the run's)")
    parser.add_argument(
        "--chunks", type=int, metavar="V", help="model chunks per rank, interleaved (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--trace", metavar="FILE", help="write the predicted trace (several: FILE.<name>.json)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulator.simulation import simulate  # SimPy loads here, not when the CLI lists its commands

    if args.trace:
        check_writable(args.trace)
    measured = load_trace(args.measured)
    header = measured.schedule
    ranks = args.stages or header.ranks
    microbatches, steps = args.microbatches or header.microbatches, args.steps or header.steps
    targets = [
        _target(name, ranks, microbatches, steps, args.chunks) for name in schedule_names(args.schedule)
    ]
    _, text = fit_cost_file(measured, source=args.measured)
    costs = loads_costs(text, source=f"calibrated from {args.measured}")
    notes = _carry_notes(measured, targets)
    if ranks != header.ranks:
        costs, more = _other_p(costs, measured, ranks, args.measured)
        notes += more
    crowded = _crowding(measured, ranks)
    notes += [crowded] if crowded else []
    results = []
    for schedule in targets:
        predicted = simulate(schedule, _for(costs, schedule), meta={"costs": f"calibrated: {args.measured}"})
        trace = predicted.trace()
        results.append((schedule, trace, compute_metrics(trace)))
        if args.trace:
            _write(args.trace, trace, several=len(targets) > 1)
    reference = compute_metrics(measured)
    if args.json:
        print(json.dumps(_json(args.measured, reference, results, notes), indent=2, allow_nan=False))
    else:
        print(_text(args.measured, reference, results, notes))
    return 0


def _other_p(costs: CostModel, measured: Trace, ranks: int, source: str) -> tuple[CostModel, list[str]]:
    from simulator.rescale import rescaled_costs

    try:
        return rescaled_costs(costs, measured, stages=ranks)
    except CostError as error:
        raise UsageError(
            f"-p {ranks}: the run at {source} has P = {measured.schedule.ranks}; {error}"
        ) from None


def _crowding(measured: Trace, ranks: int) -> str | None:
    """Where the measured run's machine has fewer CPUs than the target's ranks want (traces.calibrate's
    shared_cpus): there they would take turns, which no prediction here models."""
    found = shared_cpus(measured, ranks)
    if found is None:
        return None
    ranks, threads, cpus = found
    return (
        f"P = {ranks} ranks x {threads} thread(s) want {ranks * threads} CPUs and the measured run's machine "
        f"has {cpus}: run there, its ranks would take turns on them, which this prediction does not model "
        "(every rank has a CPU of its own here); expect the real run to be slower"
    )


def _target(name: str, ranks: int, microbatches: int, steps: int, chunks: int | None) -> Schedule:
    from schedules.registry import build_with_defaults

    info = get_info(name)
    return build_with_defaults(info.name, ranks, microbatches, steps, chunks)


def _for(costs: CostModel, schedule: Schedule) -> CostModel:
    """The calibrated costs, checked against the target's model stages."""
    costs.check_stages(schedule.layout.stages_per_pipeline // schedule.chunks)
    return replace(costs, source={**costs.source, "schedule": schedule.name})


def _carry_notes(measured: Trace, targets: list[Schedule]) -> list[str]:
    notes = [
        "carried over from the run: per-stage compute and host times, their spread, the link, "
        "warm-up and memory sizes"
    ]
    split = [t.name for t in targets if get_info(t.name).splits_backward]
    if split and not any(event.action.kind is Kind.W for event in measured.events):
        verb = "takes" if len(split) == 1 else "take"
        notes.append(f"the run has no split backward: {', '.join(split)} {verb} W = B / 2 of each stage")
    return notes


def _write(path: str, trace: Trace, *, several: bool) -> None:
    target = Path(path)
    if several:
        target = target.with_name(f"{target.stem}.{trace.schedule.name}{target.suffix or '.json'}")
    write_trace(target, trace)


def _json(source: str, reference: Metrics, results, notes: list[str]) -> dict[str, Any]:
    return {
        "from": {"trace": source, **reference.to_dict()},
        "predictions": [metrics.to_dict() for _, _, metrics in results],
        "step_time_vs_run": [
            Pair(a=reference.step_time, b=metrics.step_time).to_dict() for _, _, metrics in results
        ],
        "notes": notes,
    }


def _text(source: str, reference: Metrics, results, notes: list[str]) -> str:
    columns = [(f"measured {reference.schedule}", reference)] + [
        (f"{metrics.schedule} (predicted)", metrics) for _, _, metrics in results
    ]
    rows: list[tuple[str, ...]] = [("", *(label for label, _ in columns))]

    def row(label: str, cell) -> None:
        rows.append((label, *(cell(metrics) for _, metrics in columns)))

    row("m", lambda m: str(m.microbatches))
    row("steps", lambda m: str(m.steps))
    row("step time", lambda m: seconds(m.step_time))
    row("vs the run", lambda m: Pair(a=reference.step_time, b=m.step_time).relative_text)
    row("tokens/s", lambda m: f"{m.tokens_per_s:,.0f}")
    row("bubble fraction", lambda m: number(m.bubble_fraction))
    row("utilization (mean)", lambda m: number(sum(m.utilization) / len(m.utilization)))
    row("peak memory (max)", lambda m: size(max((p for p in m.peak_memory if p is not None), default=None)))
    row("weight versions (max)", lambda m: str(max(m.weight_versions)))
    row("delay (max)", lambda m: str(max(m.delay)))
    title = f"what-if from {source} (P = {reference.ranks}, calibrated on its {reference.steps} steps)"
    return "\n\n".join([title, format_table(rows, right=True), *(f"note: {note}" for note in notes)])

"""`pipesim simulate`: predict a schedule's timeline, throughput, memory and staleness with the SimPy model.

    pipesim simulate --schedule 2bw -p 8 -m 32
    pipesim simulate --schedule gpipe,1f1b,pipedream,2bw,amdp -p 8 -m 32          # side by side
    pipesim simulate --schedule 1f1b -p 4 -m 16 --model gpt2-small --device h100-sxm --json
    pipesim simulate --schedule 1f1b -p 4 -m 8 --costs costs.toml --trace t.json --chrome t.chrome.json
    pipesim simulate --schedule-file zbv.csv --schedule 1f1b --model gpt2-small --device h100-sxm
    pipesim simulate --model gpt3-175b --cluster dgx-a100-80gb --tp 8 --pp 16 --dp 12 --micro-batch 1 \
        --global-batch 1536 --schedule interleaved --chunks 2 --recompute selective --sequence-parallel

With --cluster the costs come from a transformer on a GPU cluster (docs/cluster.md). Without --costs,
--model/--device or --cluster the costs are t_F = 1 s, t_B = 2 s and no communication (the closed forms
of docs/schedules.md). Flags override any source; times and rates take units ("250us", "25GB/s";
docs/cost-model.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipesim.commands.readout import (
    NO_SIZES,
    capacity,
    legend,
    memory_modelled,
    memory_notes,
    size,
    throughput,
    workload_note,
)
from pipesim.commands.schedules import (
    add_file_flags,
    add_size_flags,
    format_json,
    format_table,
    number,
    schedule_from_file,
)
from pipesim.commands.simulate_cluster import add_cluster_flags, cluster_flags_given, run_cluster
from pipesim.errors import UsageError
from schedules.costs import DEFAULT_OVERLAP_F_B
from schedules.fileio import check_writable
from schedules.registry import SCHEDULES, build_with_defaults, get_info
from simulator.costs import DEFAULT_JITTER_SIGMA, JITTERS, OPTIMIZER_STATE, CostModel
from simulator.presets import DEVICES, MODELS
from simulator.request import CostRequest, complete_times
from simulator.units import CostError
from traces.chrome import write_chrome
from traces.io import write_trace
from traces.metrics import Metrics

if TYPE_CHECKING:
    from simulator.simulation import Simulation


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="predict timeline, throughput, memory and staleness of schedules (SimPy)",
        description="Simulate schedules under a cost model; print metrics, write traces.",
    )
    parser.add_argument(
        "--schedule",
        "--schedules",
        dest="schedule",
        metavar="NAMES",
        help=f"one or a comma list of: {', '.join(SCHEDULES)} (and/or --schedule-file)",
    )
    add_file_flags(parser)
    add_size_flags(parser, required=False)
    add_cost_flags(parser)
    add_cluster_flags(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the metrics as JSON (a list for several)")
    out.add_argument("--trace", metavar="FILE", help="write the trace (several schedules: FILE.<name>.json)")
    out.add_argument("--chrome", metavar="FILE", help="write a Chrome/Perfetto trace (same naming)")
    parser.set_defaults(func=run)


def add_cost_flags(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """The cost-source and override flags (shared with `pipesim sweep`, which brings its own --device)."""
    source = parser.add_argument_group("cost source (one of; default unit costs)")
    source.add_argument("--costs", metavar="FILE", help="a TOML cost file (docs/cost-model.md)")
    source.add_argument("--model", metavar="PRESET", help=f"transformer preset: {', '.join(MODELS)}")
    if device:
        source.add_argument("--device", metavar="PRESET", help=f"device preset: {', '.join(DEVICES)}")
    source.add_argument(
        "--microbatch-size",
        "--micro-batch",
        dest="microbatch_size",
        type=int,
        metavar="N",
        help="samples per microbatch",
    )
    shape = parser.add_argument_group("model shape (with --model; the names of `pipesim run`'s flags)")
    shape.add_argument("--layers", type=int, metavar="N", help="transformer blocks (replaces the preset's)")
    shape.add_argument("--hidden", type=int, metavar="N", help="width of the residual stream")
    shape.add_argument("--seq-len", type=int, metavar="N", help="context length, tokens per sample")
    shape.add_argument("--split", metavar="N,N,...", help="blocks per stage (P numbers, or P x chunks)")
    flags = parser.add_argument_group("overrides (units allowed: 2ms, 10us, 25GB/s)")
    flags.add_argument(
        "--tf", metavar="TIME", help="forward of one stage (over unit costs, alone: also sets t_B = 2 x this)"
    )
    flags.add_argument(
        "--tb",
        metavar="TIME",
        help="full backward of one stage, B = I + W (over unit costs, alone: t_F = half)",
    )
    flags.add_argument(
        "--tw", metavar="TIME", help="the weight-gradient part W of the backward (default tb/2)"
    )
    flags.add_argument("--topt", metavar="TIME", help="optimizer step of one stage")
    flags.add_argument(
        "--activation-bytes",
        metavar="SIZE",
        help="bytes sent to the next stage per microbatch, e.g. 16MiB (what --bandwidth acts on)",
    )
    flags.add_argument("--latency", metavar="TIME", help="per point-to-point transfer")
    flags.add_argument("--bandwidth", metavar="RATE", help="of a point-to-point link, bytes/s or with a unit")
    flags.add_argument("--no-overlap", action="store_true", help="sends block their rank (no send stream)")
    flags.add_argument(
        "--overlap-f-b",
        metavar="X",
        help="an OVERLAP_F_B pair takes the longer of its forward and backward plus X times the shorter "
        f"(0..1, default {DEFAULT_OVERLAP_F_B})",
    )
    flags.add_argument(
        "--optimizer", choices=tuple(OPTIMIZER_STATE), help="optimizer state held (default adamw)"
    )
    flags.add_argument("--dp", metavar="D", help="data-parallel replicas (ring all-reduce at OPT)")
    flags.add_argument("--jitter", choices=JITTERS, help="compute-time jitter distribution (mean 1)")
    flags.add_argument(
        "--jitter-sigma",
        metavar="X",
        help=f"relative spread of the jitter (default {DEFAULT_JITTER_SIGMA} once a distribution is chosen)",
    )
    flags.add_argument("--seed", metavar="N", help="seed of the jitter (default 0)")


def override_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The override flags given, as keyword arguments of costfile.with_overrides."""
    overrides = {
        "forward": args.tf,
        "backward": args.tb,
        "backward_weight": args.tw,
        "optimizer_step": args.topt,
        "activation_bytes": args.activation_bytes,
        "latency": args.latency,
        "bandwidth": args.bandwidth,
        "overlap": False if args.no_overlap else None,
        "overlap_f_b": args.overlap_f_b,
        "data_parallel": args.dp,
        "seed": args.seed,
        "jitter": args.jitter,
        "jitter_sigma": args.jitter_sigma,
    }
    return {key: value for key, value in overrides.items() if value is not None}


def cost_request(args: argparse.Namespace, device: str | None = None) -> CostRequest:
    """The CostRequest the flags describe (`device` overrides args.device, for sweeps over devices)."""
    given = override_flags(args)
    notes: tuple[str, ...] = ()
    if args.costs is None and args.model is None:
        given, notes = complete_times(given)
    return CostRequest(
        costs_file=args.costs,
        model=args.model,
        device=device if device is not None else args.device,
        microbatch_size=args.microbatch_size,
        shape=model_shape(args),
        optimizer=args.optimizer,
        overrides=given,
        notes=notes,
    )


def model_shape(args: argparse.Namespace) -> dict[str, Any]:
    """The --layers, --hidden, --seq-len and --split flags as CostRequest.shape."""
    shape: dict[str, Any] = {"layers": args.layers, "hidden": args.hidden, "seq_len": args.seq_len}
    if args.split is not None:
        try:
            shape["split"] = tuple(int(part) for part in args.split.split(","))
        except ValueError:
            raise CostError(f"--split takes comma-separated block counts, got {args.split!r}") from None
    return {key: value for key, value in shape.items() if value is not None}


def print_notes(request: CostRequest) -> None:
    """What the flags made pipesim derive, and flags that change nothing, on stderr."""
    for line in (*request.notes, *(f"warning: {text}" for text in request.warnings())):
        print(f"pipesim: {line}", file=sys.stderr)


def schedule_names(text: str | None) -> list[str]:
    """A comma list of registered schedule names (ScheduleError for an unknown one)."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    return [get_info(name).name for name in names]


def needs_a_schedule(args: argparse.Namespace, names: list[str], flag: str = "--schedule") -> None:
    if not names and not args.schedule_file:
        raise UsageError(f"{flag} NAMES or --schedule-file FILE.csv (or both) is required")


def run(args: argparse.Namespace) -> int:
    from simulator.simulation import simulate  # SimPy loads here, not when the CLI lists its commands

    for path in (args.trace, args.chrome):  # a bad output path costs nothing
        if path:
            check_writable(path)
    names = schedule_names(args.schedule)
    needs_a_schedule(args, names)
    if args.cluster is not None:
        if args.schedule_file:
            raise UsageError("--schedule-file: not with --cluster (its costs are built for a named schedule)")
        overrides = {key: value for key, value in override_flags(args).items() if key != "data_parallel"}
        return run_cluster(args, overrides, names)
    cluster_only = cluster_flags_given(args)
    if cluster_only:
        raise UsageError(f"{', '.join(cluster_only)}: only with --cluster (and --model CONFIG)")
    schedules = []
    if args.schedule_file:  # P and m from the file unless given (and then they must agree)
        imported = schedule_from_file(
            args, steps=args.steps, ranks=args.stages, microbatches=args.microbatches
        )
        args.stages, args.microbatches = imported.ranks, imported.microbatches
        schedules.append(imported)
    if args.stages is None or args.microbatches is None:
        raise UsageError(
            "pipesim simulate: the following arguments are required: -p/--stages, -m/--microbatches"
        )
    request = cost_request(args)
    print_notes(request)
    schedules += [
        build_with_defaults(n, args.stages, args.microbatches, args.steps, args.chunks) for n in names
    ]
    simulations = [simulate(s, request.costs_for(s), meta={"costs": request.label}) for s in schedules]
    for simulation in simulations:
        _write_files(args, simulation, several=len(simulations) > 1)
    results = [(simulation, simulation.metrics()) for simulation in simulations]
    if args.json:
        dicts = [_json(simulation, metrics, request) for simulation, metrics in results]
        print(format_json(dicts[0]) if len(dicts) == 1 else json.dumps(dicts, indent=2))
    elif len(results) == 1:
        print(format_one(*results[0], request))
    else:
        print(format_side_by_side(results, request))
    return 0


def _write_files(args: argparse.Namespace, simulation: Simulation, *, several: bool) -> None:
    for path, write in ((args.trace, write_trace), (args.chrome, write_chrome)):
        if path:
            target = Path(path)
            if several:
                target = target.with_name(
                    f"{target.stem}.{simulation.schedule.name}{target.suffix or '.json'}"
                )
            write(target, simulation.trace())


def _json(simulation: Simulation, metrics: Metrics, request: CostRequest) -> dict[str, Any]:
    return {**metrics.to_dict(), "costs": request.label, "memory_capacity": simulation.costs.memory_capacity}


# --- text output ---------------------------------------------------------------------------------


def seconds(value: float) -> str:
    """A time with a readable unit: 117 s, 3.2 ms, 850 us."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(value) >= scale or unit == "ns":
            return f"{value / scale:.4g} {unit}"
    return f"{value:g} s"


def rate(value: float) -> str:
    return f"{value:.4g}"


def _title(simulation: Simulation, request: CostRequest) -> str:
    schedule = simulation.schedule
    chunks = f", {schedule.chunks} chunks per rank" if schedule.chunks > 1 else ""
    steps = f"{schedule.steps} step" + ("s" if schedule.steps > 1 else "")
    return (
        f"{schedule.name}: P = {schedule.ranks} ranks, m = {schedule.microbatches} microbatches, {steps}"
        f"{chunks}; costs: {request.label}"
    )


def format_one(simulation: Simulation, metrics: Metrics, request: CostRequest) -> str:
    """Scalars, then per-rank and per-stage tables, then what the words mean and any warning."""
    costs = simulation.costs
    scalars = [
        ("step time", seconds(metrics.step_time)),
        ("throughput", _throughput(metrics, costs)),
        ("bubble fraction", number(metrics.bubble_fraction)),
        ("makespan", seconds(metrics.makespan)),
    ]
    if costs.memory_capacity:
        scalars.append(("memory per device", capacity(costs.memory_capacity)))
    modelled = memory_modelled(metrics.peak_memory)
    per_rank = [
        ("rank", *map(str, range(metrics.ranks))),
        ("utilization", *map(number, metrics.utilization)),
        ("peak memory", *(map(size, metrics.peak_memory) if modelled else ["-"] * metrics.ranks)),
    ]
    per_stage = [
        ("stage", *map(str, range(metrics.stages))),
        ("delay", *map(str, metrics.delay)),
        ("weight versions", *map(str, metrics.weight_versions)),
        ("mismatches", *map(str, metrics.mismatches)),
        ("peak activations", *map(number, metrics.peak_activations)),
    ]
    notes = memory_notes(metrics.peak_memory, costs.memory_capacity) if modelled else [NO_SIZES]
    notes.append(legend(chunks=simulation.schedule.chunks))
    tables = [format_table(scalars), _indexed(per_rank), _indexed(per_stage)]
    return "\n\n".join([_title(simulation, request), *tables, "\n".join(notes)])


def _throughput(metrics: Metrics, costs: CostModel) -> str:
    return throughput(
        metrics.samples_per_s, metrics.tokens_per_s, costs.microbatch_size, costs.sequence_length
    )


WIDE_LIMIT = 12
"""Up to this many ranks or stages a table has one column each; beyond, one row each."""


def _indexed(rows: list[tuple[str, ...]]) -> str:
    """A per-rank or per-stage table: wide when short, transposed (one line per index) when long."""
    if len(rows[0]) - 1 > WIDE_LIMIT:
        rows = list(zip(*rows, strict=True))
    return format_table(rows, right=True)


def format_side_by_side(results: list[tuple[Simulation, Metrics]], request: CostRequest) -> str:
    """One column per schedule."""
    rows: list[tuple[str, ...]] = [("", *(m.schedule for _, m in results))]

    def row(label: str, cell) -> None:
        rows.append((label, *(cell(simulation, metrics) for simulation, metrics in results)))

    costs = results[0][0].costs  # one request: the same workload for every schedule
    row("steps", lambda s, m: str(m.steps))
    row("step time", lambda s, m: seconds(m.step_time))
    row("microbatches/s" if costs.microbatch_size == 1 else "samples/s", lambda s, m: rate(m.samples_per_s))
    if costs.sequence_length > 1:
        row("tokens/s", lambda s, m: rate(m.tokens_per_s))
    row("bubble fraction", lambda s, m: number(m.bubble_fraction))
    row("utilization (mean)", lambda s, m: number(sum(m.utilization) / len(m.utilization)))
    modelled = any(memory_modelled(m.peak_memory) for _, m in results)

    def peak(simulation: Simulation, metrics: Metrics) -> str:
        known = [value for value in metrics.peak_memory if value is not None]
        return size(max(known, default=None)) if modelled else "-"

    row("peak memory (max)", peak)
    row("weight versions (max)", lambda s, m: str(max(m.weight_versions)))
    row("delay (max)", lambda s, m: str(max(m.delay)))
    row("mismatches (total)", lambda s, m: str(sum(m.mismatches)))
    row("makespan", lambda s, m: seconds(m.makespan))
    ranks, microbatches = results[0][0].schedule.ranks, results[0][0].schedule.microbatches
    title = f"P = {ranks} ranks, m = {microbatches} microbatches; costs: {request.label}"
    return "\n\n".join([title, format_table(rows, right=True), _side_by_side_notes(results, costs)])


def _side_by_side_notes(results: list[tuple[Simulation, Metrics]], costs: CostModel) -> str:
    notes = []
    if costs.memory_capacity:
        notes.append(f"memory per device: {capacity(costs.memory_capacity)}")
    for _, metrics in results:
        notes += memory_notes(metrics.peak_memory, costs.memory_capacity, who=f"{metrics.schedule}: ")
    if not any(memory_modelled(m.peak_memory) for _, m in results):
        notes.append(NO_SIZES)
    workload = workload_note(costs.microbatch_size, costs.sequence_length)
    if workload:
        notes.append(f"throughput: {workload}")
    notes.append(legend(activations=False))
    return "\n".join(notes)

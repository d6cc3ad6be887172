"""`pipesim simulate --cluster`: a transformer trained on a GPU cluster with tensor, pipeline and data
parallelism, predicted by the SimPy model (docs/cluster.md).

    pipesim simulate --model gpt3-175b --cluster dgx-a100-80gb --tp 8 --pp 16 --dp 12 \\
        --micro-batch 1 --global-batch 1536 --schedule interleaved --chunks 2 \\
        --recompute selective --sequence-parallel

--pp is -p; the microbatches per step m = global batch / (dp x micro-batch) (-m, if given, must agree).
The cost-override flags (--tf, --latency, --jitter, ...) apply on top, as over any cost source.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipesim.commands.readout import capacity, size
from pipesim.commands.schedules import format_json, format_table, number
from pipesim.errors import UsageError
from schedules.registry import DEFAULT_CHUNKS, get_info
from simulator.cluster import CLUSTERS, DTYPES
from simulator.transformer import MODEL_PRESETS, RECOMPUTE
from simulator.units import CostError, parse_bytes, parse_count

if TYPE_CHECKING:
    from simulator.cluster_run import ClusterPrediction
    from simulator.parallel import ParallelConfig
    from simulator.transformer import TransformerConfig

CLUSTER_FLAGS = (
    "tp",
    "pp",
    "global_batch",
    "recompute",
    "sequence_parallel",
    "dtype",
    "dp_overlap",
    "gpus",
    "memory_limit",
)
"""Flags that only mean something with --cluster."""


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """The cluster source and its parallel configuration (shared with `pipesim plan` in part)."""
    group = parser.add_argument_group("cluster (with --model CONFIG: a preset or a TOML model file)")
    group.add_argument("--cluster", metavar="PRESET", help=f"cluster preset: {', '.join(CLUSTERS)}")
    group.add_argument("--tp", type=int, metavar="N", help="tensor-parallel GPUs per pipeline stage")
    group.add_argument("--pp", type=int, metavar="N", help="pipeline stages (the same as -p)")
    group.add_argument(
        "--global-batch", type=int, metavar="B", help="sequences per step; m = B / (dp x micro-batch)"
    )
    group.add_argument("--recompute", choices=RECOMPUTE, help="activation recompute (default none)")
    group.add_argument(
        "--sequence-parallel", action="store_true", help="shard layernorm and dropout over the tp group"
    )
    group.add_argument("--dtype", choices=DTYPES, help="compute type of the GEMMs (default bf16)")
    group.add_argument(
        "--dp-overlap", action="store_true", help="overlap the data-parallel all-reduce with the backward"
    )
    group.add_argument("--gpus", type=int, metavar="N", help="check that tp x pp x dp equals it")
    group.add_argument("--memory-limit", metavar="SIZE", help="bytes per GPU to fit in (default: capacity)")


def cluster_flags_given(args: argparse.Namespace) -> list[str]:
    """The cluster-only flags on the command line (to refuse them without --cluster)."""
    return [f"--{name.replace('_', '-')}" for name in CLUSTER_FLAGS if getattr(args, name, None)]


def memory_limit(args: argparse.Namespace) -> int | None:
    return None if args.memory_limit is None else parse_bytes(args.memory_limit, "--memory-limit")


def parallel_config(args: argparse.Namespace, schedule: str, *, several: bool = False) -> ParallelConfig:
    """The ParallelConfig the flags describe for one schedule (UsageError for sizes that disagree).
    Among `several` schedules, --chunks applies to those that take chunks."""
    from simulator.parallel import ParallelConfig

    pp = _given(_agree(args.pp, args.stages, "--pp", "-p"), 1)
    dp = parse_count(args.dp, "--dp", minimum=1) if args.dp is not None else 1
    micro_batch = _given(args.microbatch_size, 1)
    global_batch = args.global_batch
    if global_batch is None:
        if args.microbatches is None:
            raise UsageError("--cluster needs --global-batch (or -m, the microbatches per replica)")
        global_batch = args.microbatches * dp * micro_batch
    uses_chunks = get_info(schedule).uses_chunks
    chunks = _given(args.chunks, DEFAULT_CHUNKS if uses_chunks else 1)
    if several and not uses_chunks:
        chunks = 1
    parallel = ParallelConfig(
        tp=_given(args.tp, 1),
        pp=pp,
        dp=dp,
        micro_batch=micro_batch,
        global_batch=global_batch,
        schedule=get_info(schedule).name,
        chunks=chunks,
        recompute=args.recompute or "none",
        sequence_parallel=args.sequence_parallel,
        dtype=args.dtype or "bf16",
        dp_overlap=args.dp_overlap,
        split=_split(args.split),
    )
    if args.microbatches is not None and global_batch % (dp * micro_batch) == 0:
        _agree(args.microbatches, parallel.microbatches, "-m", "--global-batch / (dp x micro-batch)")
    return parallel


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def _agree(first: int | None, second: int | None, name: str, other: str) -> int | None:
    if first is not None and second is not None and first != second:
        raise UsageError(f"{name} {first} disagrees with {other} = {second}")
    return first if first is not None else second


def _split(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CostError(f"--split takes comma-separated layer counts, got {text!r}") from None


def transformer(args: argparse.Namespace) -> TransformerConfig:
    """--model CONFIG with --layers, --hidden, --seq-len applied."""
    from simulator.transformer import model_config

    if args.model is None:
        raise UsageError(
            f"--cluster needs --model CONFIG (a preset: {', '.join(MODEL_PRESETS)}, or a TOML file)"
        )
    model = model_config(args.model)
    changes = {"layers": args.layers, "hidden": args.hidden, "seq_len": args.seq_len}
    changes = {key: value for key, value in changes.items() if value is not None}
    return replace(model, **changes) if changes else model


def run_cluster(args: argparse.Namespace, overrides: dict[str, Any], names: list[str]) -> int:
    """Predict each schedule on the cluster; print one report, or columns side by side."""
    from simulator.cluster import cluster_preset
    from simulator.cluster_costs import cluster_costs
    from simulator.cluster_run import predict
    from simulator.costfile import with_overrides
    from simulator.parallel import check_gpus

    if args.costs is not None or args.device is not None:
        raise UsageError("--cluster is a cost source of its own: drop --costs and --device")
    model, cluster = transformer(args), cluster_preset(args.cluster)
    predictions = []
    for name in names:
        parallel = parallel_config(args, name, several=len(names) > 1)
        check_gpus(parallel, args.gpus)
        built = cluster_costs(model, cluster, parallel)
        built = replace(built, costs=with_overrides(built.costs, optimizer=args.optimizer, **overrides))
        predictions.append(
            predict(model, cluster, parallel, steps=args.steps, memory_limit=memory_limit(args), built=built)
        )
    for prediction in predictions:
        _write_files(args, prediction, several=len(predictions) > 1)
        if not prediction.fits:
            print(f"pipesim: warning: {_does_not_fit(prediction)}", file=sys.stderr)
    if args.json:
        dicts = [prediction.to_dict() for prediction in predictions]
        print(format_json(dicts[0]) if len(dicts) == 1 else json.dumps(dicts, indent=2))
    elif len(predictions) == 1:
        print(format_cluster(predictions[0]))
    else:
        print(format_cluster_side_by_side(predictions))
    return 0


def _write_files(args: argparse.Namespace, prediction: ClusterPrediction, *, several: bool) -> None:
    from traces.chrome import write_chrome
    from traces.io import write_trace

    for path, write in ((args.trace, write_trace), (args.chrome, write_chrome)):
        if path:
            target = Path(path)
            if several:
                suffix = target.suffix or ".json"
                target = target.with_name(f"{target.stem}.{prediction.parallel.schedule}{suffix}")
            write(target, prediction.simulation.trace())


def _does_not_fit(prediction: ClusterPrediction) -> str:
    p = prediction.parallel
    return (
        f"{p.schedule}: predicted {size(prediction.memory_per_gpu)} per GPU exceeds the "
        f"{size(prediction.usable_memory)} usable of one GPU's {capacity(prediction.memory_limit)}: "
        "it would not fit"
    )


def seconds(value: float) -> str:
    return f"{value:.4g} s" if value >= 1 else f"{value * 1e3:.4g} ms"


def summary_rows(prediction: ClusterPrediction) -> list[tuple[str, str]]:
    """The headline numbers, label and value."""
    fit = "fits" if prediction.fits else "does NOT fit"
    peak = prediction.cluster.peak(prediction.parallel.dtype) / 1e12
    tokens = prediction.parallel.global_batch * prediction.model.seq_len / prediction.iteration_time
    return [
        ("iteration time", seconds(prediction.iteration_time)),
        ("model TFLOP/s per GPU", f"{prediction.tflops_per_gpu:.1f}"),
        ("hardware TFLOP/s per GPU", f"{prediction.hardware_tflops_per_gpu:.1f} (recompute counted)"),
        (
            "MFU",
            f"{100 * prediction.mfu:.1f}% of {peak:g} TFLOP/s",
        ),
        ("throughput", f"{tokens:.4g} tokens/s"),
        ("bubble fraction", number(prediction.metrics.bubble_fraction)),
        (
            "memory per GPU",
            f"{size(prediction.memory_per_gpu)} of {size(prediction.usable_memory)} usable "
            f"({capacity(prediction.memory_limit)} per GPU): {fit}",
        ),
    ]


def format_cluster(prediction: ClusterPrediction) -> str:
    """The headline, then where the memory and one block's time go."""
    p, layer = prediction.parallel, prediction.built.layer
    title = (
        f"{prediction.model.name} on {p.gpus} GPUs of {prediction.cluster.name}: {p.label()}; "
        f"m = {p.microbatches} microbatches per replica"
    )
    memory = [(name, size(value)) for name, value in prediction.memory_parts().items()]
    block = [
        ("forward", seconds(layer.forward)),
        ("  tensor-parallel collectives", seconds(layer.forward_comm)),
        ("backward", seconds(layer.backward_input + layer.backward_weight)),
        ("  tensor-parallel collectives", seconds(layer.backward_comm)),
        ("recompute", seconds(layer.recompute)),
        ("pipeline send (per microbatch)", seconds(prediction.built.p2p_seconds)),
        ("data-parallel all-reduce (per step)", seconds(prediction.built.dp_seconds)),
    ]
    notes = [
        "model TFLOP/s: 72 B s l h^2 (1 + s/6h + V/12lh) per step / (GPUs x iteration time); "
        "hardware TFLOP/s adds the recomputed forwards; MFU = model FLOP/s / peak",
        "memory per GPU: the most loaded rank's peak (weights x versions, gradients, fp32 optimizer "
        "state, activations in flight, buffers) + one block's backward working set",
    ]
    if not prediction.fits:
        notes.append(f"warning: {_does_not_fit(prediction)}")
    return "\n\n".join(
        [
            title,
            format_table(summary_rows(prediction)),
            "memory per GPU (most loaded rank)\n" + format_table(memory, right=True),
            "one block, one microbatch, one GPU\n" + format_table(block, right=True),
            "\n".join(notes),
        ]
    )


def format_cluster_side_by_side(predictions: list[ClusterPrediction]) -> str:
    """One column per schedule."""
    rows: list[tuple[str, ...]] = [("", *(p.parallel.schedule for p in predictions))]

    def row(label: str, cell) -> None:
        rows.append((label, *(cell(prediction) for prediction in predictions)))

    row("iteration time", lambda p: seconds(p.iteration_time))
    row("model TFLOP/s per GPU", lambda p: f"{p.tflops_per_gpu:.1f}")
    row("hardware TFLOP/s per GPU", lambda p: f"{p.hardware_tflops_per_gpu:.1f}")
    row("MFU", lambda p: f"{100 * p.mfu:.1f}%")
    row("bubble fraction", lambda p: number(p.metrics.bubble_fraction))
    row("memory per GPU", lambda p: size(p.memory_per_gpu))
    row("fits", lambda p: "yes" if p.fits else "NO")
    row("weight versions (max)", lambda p: str(max(p.metrics.weight_versions)))
    row("delay (max)", lambda p: str(max(p.metrics.delay)))
    first = predictions[0]
    p = first.parallel
    title = (
        f"{first.model.name} on {p.gpus} GPUs of {first.cluster.name}: tp {p.tp} x pp {p.pp} x dp {p.dp}, "
        f"b {p.micro_batch}, m = {p.microbatches}, {p.recompute}{' + SP' if p.sequence_parallel else ''}, "
        f"{p.dtype}; {size(first.usable_memory)} usable per GPU"
    )
    peak = first.cluster.peak(p.dtype) / 1e12
    notes = f"MFU: model FLOP/s over the {peak:g} TFLOP/s peak of {p.dtype}"
    chunked = [q.parallel for q in predictions if q.parallel.chunks > 1]
    if chunked:
        notes += "; " + ", ".join(f"{q.schedule} runs v = {q.chunks} chunks per rank" for q in chunked)
    return "\n\n".join([title, format_table(rows, right=True), notes])

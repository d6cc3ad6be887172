"""`pipesim plan`: the fastest way to train a model on so many GPUs of a cluster that fits in memory.

    pipesim plan --model gpt3-175b --cluster dgx-a100-80gb --gpus 1024 --global-batch 1536
    pipesim plan --model gpt3-13b --cluster dgx-a100-80gb --gpus 64 --global-batch 256 \\
        --schedules 1f1b,interleaved --memory-limit 40GB --top 3

Searches tensor x pipeline x data parallelism, micro-batch, schedule (with interleaved chunks) and
recompute (simulator/planner.py: a closed-form pass over every configuration, then the SimPy model on a
process pool, with a progress bar on stderr, for the most promising). Prints the best few with their
predicted time, MFU and memory, and why the runner-up loses.
"""

from __future__ import annotations

import argparse
import json
import os

from pipesim.commands.readout import capacity, size
from pipesim.commands.schedules import format_table
from pipesim.commands.simulate import schedule_names
from pipesim.commands.sweep import int_list
from pipesim.errors import UsageError
from schedules.registry import SCHEDULES
from simulator.cluster import CLUSTERS, DTYPES
from simulator.transformer import MODEL_PRESETS, RECOMPUTE
from simulator.units import parse_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="search tp x pp x dp x micro-batch x schedule for the fastest configuration that fits",
        description="Search parallel configurations of a model on a cluster; print the fastest that fit.",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="CONFIG",
        help=f"a preset ({', '.join(MODEL_PRESETS)}) or a TOML file",
    )
    parser.add_argument("--cluster", required=True, metavar="PRESET", help=f"one of: {', '.join(CLUSTERS)}")
    parser.add_argument("--gpus", required=True, type=int, metavar="N", help="GPUs to use (tp x pp x dp)")
    parser.add_argument("--global-batch", required=True, type=int, metavar="B", help="sequences per step")
    parser.add_argument("--memory-limit", metavar="SIZE", help="bytes per GPU (default: the GPU's capacity)")
    space = parser.add_argument_group("search space")
    space.add_argument(
        "--schedules", "--schedule", dest="schedules", metavar="NAMES", help="comma list (default: all)"
    )
    space.add_argument(
        "--tp", metavar="N,N", default="1,2,4,8", help="tensor-parallel sizes (default 1,2,4,8)"
    )
    space.add_argument(
        "--micro-batches", metavar="N,N", default="1,2,4,8", help="micro-batch sizes (default 1,2,4,8)"
    )
    space.add_argument(
        "--recompute", metavar="MODES", help=f"comma list of {', '.join(RECOMPUTE)} (default all)"
    )
    space.add_argument("--dtype", choices=DTYPES, default="bf16", help="compute type (default bf16)")
    space.add_argument("--dp-overlap", action="store_true", help="overlap the data-parallel all-reduce")
    out = parser.add_argument_group("search and output")
    out.add_argument("--candidates", type=int, default=32, metavar="N", help="simulated configurations (32)")
    out.add_argument("--top", type=int, default=5, metavar="N", help="configurations printed (default 5)")
    out.add_argument("--jobs", type=int, default=None, metavar="N", help="worker processes (default: CPUs)")
    out.add_argument("--json", action="store_true", help="print the ranked configurations as JSON")
    parser.set_defaults(func=run)


def _space(args: argparse.Namespace):
    from simulator.planner import SearchSpace

    recompute = RECOMPUTE
    if args.recompute:
        recompute = tuple(mode.strip() for mode in args.recompute.split(",") if mode.strip())
        unknown = [mode for mode in recompute if mode not in RECOMPUTE]
        if unknown or not recompute:
            raise UsageError(
                f"--recompute: unknown {unknown[0] if unknown else ''!r} (known: {', '.join(RECOMPUTE)})"
            )
    for flag, value in (("--candidates", args.candidates), ("--top", args.top), ("--gpus", args.gpus)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.global_batch < 1:
        raise UsageError(f"--global-batch must be at least 1, got {args.global_batch}")
    return SearchSpace(
        gpus=args.gpus,
        global_batch=args.global_batch,
        tps=tuple(int_list(args.tp, "--tp")),
        micro_batches=tuple(int_list(args.micro_batches, "--micro-batches")),
        schedules=tuple(schedule_names(args.schedules)) if args.schedules else tuple(SCHEDULES),
        recomputes=recompute,
        dtype=args.dtype,
        dp_overlap=args.dp_overlap,
        memory_limit=None if args.memory_limit is None else parse_bytes(args.memory_limit, "--memory-limit"),
    )


def run(args: argparse.Namespace) -> int:
    from simulator.cluster import cluster_preset
    from simulator.planner import search
    from simulator.sweep import ProgressBar
    from simulator.transformer import model_config

    model, cluster, space = model_config(args.model), cluster_preset(args.cluster), _space(args)
    cluster.peak(space.dtype)
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    bar = ProgressBar(0, label="plan")

    def set_total(total: int) -> None:
        bar.total = total

    result = search(
        model, cluster, space, candidates=args.candidates, jobs=jobs, progress=bar, on_total=set_total
    )
    limit = space.memory_limit if space.memory_limit is not None else cluster.memory_capacity
    if args.json:
        print(
            json.dumps(
                {
                    "considered": result.considered,
                    "simulated": result.simulated,
                    "ranked": result.ranked[: args.top],
                    "too_big": result.too_big[:1],
                },
                indent=2,
            )
        )
        return 0 if result.ranked else 1
    print(format_plan(result, model.name, cluster.name, space, limit, args.top, cluster.memory_reserved))
    return 0 if result.ranked else 1


def format_plan(result, model: str, cluster: str, space, limit: int, top: int, reserved: int) -> str:
    """The best `top` configurations, then why the runner-up loses."""
    from simulator.planner import why_slower

    title = (
        f"{model} on {space.gpus} GPUs of {cluster}, global batch {space.global_batch}, at most "
        f"{capacity(limit)} per GPU ({size(limit - reserved)} usable): {result.considered} configurations, "
        f"{result.simulated} simulated"
    )
    if not result.ranked:
        closest = result.too_big[0] if result.too_big else None
        hint = (
            f"; the smallest simulated, {closest['label']}, needs {size(closest['memory_per_gpu'])}"
            if closest
            else ""
        )
        return f"{title}\n\nnone of the simulated configurations fits{hint}"
    rows = [("#", "configuration", "iteration", "TFLOP/s", "MFU", "memory", "bubble")]
    for index, summary in enumerate(result.ranked[:top], start=1):
        rows.append(
            (
                str(index),
                summary["label"],
                f"{summary['iteration_time']:.4g} s",
                f"{summary['tflops_per_gpu']:.1f}",
                f"{100 * summary['mfu']:.1f}%",
                size(summary["memory_per_gpu"]),
                f"{summary['bubble_fraction']:.3f}",
            )
        )
    parts = [title, format_table(rows)]
    if len(result.ranked) > 1:
        parts.append("why the runner-up loses: " + why_slower(result.ranked[0], result.ranked[1]))
    parts.append(
        "TFLOP/s: model FLOPs per GPU (recompute not counted); asynchronous schedules (pipedream, 2bw, "
        "amdp) train on stale weights: see their delay with `pipesim simulate --cluster`"
    )
    return "\n\n".join(parts)

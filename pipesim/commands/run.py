"""`pipesim run`: train a real small GPT with one schedule on this machine's CPUs (gloo) or GPUs (NCCL).

    pipesim run --schedule 2bw --stages 2 --microbatches 8 --steps 50 --optimizer adamw --model tiny \\
        --device cpu --out runs/NAME
    pipesim run --single-process --schedule pipedream --stages 4 --steps 20 --out runs/pd
    pipesim run --resume runs/NAME                        # continue from its latest checkpoint

The flags mirror executor.run.runconfig.RunConfig (and executor.training.optim.OptimizerConfig); everything is
checked before any process starts. The run folder gets config.json, metrics.jsonl and trace.json
(executor.run.launch says what else, and what a stop or a resume does to it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from executor.errors import ExecutorConfigError
from schedules.csv_io import NOTATIONS
from schedules.imported import LAYOUTS, layout_line, read_schedule_file
from schedules.ir import ScheduleError
from schedules.registry import SCHEDULES


def _floats(text: str) -> tuple[float, ...]:
    """'0.9,0.95' -> (0.9, 0.95), for --betas."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# (flag, RunConfig field, type, help); optimizer fields are prefixed with "optimizer."
FLAGS: list[tuple[str, str, Any, str]] = [
    ("--schedule", "schedule", str, "schedule name (default 1f1b)"),
    (
        "--schedule-file",
        "schedule_file",
        str,
        "a torch.distributed.pipelining schedule CSV to run instead of a named schedule: P, m and chunks "
        "come from it (--layout, --notation as for simulate)",
    ),
    ("--stages", "stages", int, "pipeline ranks P (default 2)"),
    ("--microbatches", "microbatches", int, "microbatches per step m (default 4)"),
    (
        "--steps",
        "steps",
        int,
        "steps of m microbatches (default 20), one metrics line each; synchronous schedules and 2bw "
        "update once per step, pipedream once per microbatch (m updates per step)",
    ),
    ("--chunks", "chunks", int, "model chunks per rank, interleaved only (default 2)"),
    ("--model", "model", str, "model preset: tiny, small, gpt2-small, gpt2-medium (default tiny)"),
    ("--layers", "layers", int, "override the preset's blocks"),
    ("--hidden", "hidden", int, "override the preset's width"),
    ("--seq-len", "seq_len", int, "override the preset's context length"),
    ("--split", "split", str, "blocks per model piece, e.g. 1,3 (default balanced)"),
    ("--microbatch-size", "microbatch_size", int, "sequences per microbatch (default 8)"),
    ("--optimizer", "optimizer.name", str, "sgd, adamw, nadamw, muon, basis-rotation (default adamw)"),
    ("--lr", "optimizer.lr", float, "peak learning rate (default 1e-3)"),
    ("--weight-decay", "optimizer.weight_decay", float, "decoupled weight decay (default 0)"),
    (
        "--grad-clip",
        "optimizer.grad_clip",
        float,
        "clip the gradient norm to this (default off): the global norm over all stages for synchronous "
        "schedules (and schedule files), each stage's own norm for asynchronous ones "
        "(pipedream, 2bw, amdp), whose stages update at different times",
    ),
    ("--warmup-steps", "optimizer.warmup_steps", int, "linear warm-up, in updates (default 0)"),
    ("--total-steps", "optimizer.total_steps", int, "end of the cosine decay, in updates (default none)"),
    ("--correction", "optimizer.correction", str, "staleness correction: none, pipemare, delay"),
    ("--betas", "optimizer.betas", _floats, "beta1,beta2 of adamw, nadamw, basis-rotation (0.9,0.95)"),
    ("--eps", "optimizer.eps", float, "denominator epsilon of the Adam-like optimizers (default 1e-8)"),
    ("--momentum", "optimizer.momentum", float, "sgd momentum (default 0.9)"),
    ("--muon-momentum", "optimizer.muon_momentum", float, "muon momentum (default 0.95)"),
    ("--min-lr-ratio", "optimizer.min_lr_ratio", float, "cosine decay ends at lr x this (default 0.1)"),
    ("--rotation-sides", "optimizer.rotation_sides", str, "basis-rotation: both, or one (the smaller side)"),
    (
        "--rotation-every",
        "optimizer.rotation_every",
        int,
        "basis-rotation: refresh the bases every N updates",
    ),
    (
        "--rotation-beta",
        "optimizer.rotation_beta",
        float,
        "basis-rotation: decay of its factors (default beta2)",
    ),
    (
        "--pipemare-steps",
        "optimizer.pipemare_steps",
        int,
        "pipemare: updates until lr is unscaled (default 100)",
    ),
    ("--delay-lambda", "optimizer.delay_lambda", float, "delay correction's lambda (default 0.5)"),
    ("--data", "data", str, "text file or folder (default: the Python standard library's sources)"),
    ("--seed", "seed", int, "seed of weights and batches (default 0)"),
    ("--device", "device", str, "cpu (gloo) or cuda (NCCL) (default cpu)"),
    ("--threads", "threads", int, "torch threads per rank (default 1)"),
    ("--val-every", "val_every", int, "validation loss every N steps, 0: never (default 10)"),
    ("--val-microbatches", "val_microbatches", int, "validation microbatches (default 2)"),
    ("--timeout", "timeout", float, "seconds a rank may wait on one action (default 60)"),
    ("--checkpoint-every", "checkpoint_every", int, "checkpoint every N steps, 0: never (default 0)"),
    ("--keep-checkpoints", "keep_checkpoints", int, "keep the newest N checkpoints (default 3)"),
]


FLAG_SWITCHES = ["optimizer.nesterov_per_stage"]
"""Optimizer settings that are on/off switches (store_true flags), beside FLAGS."""

ALIASES = {"--stages": ("-p", "--ranks"), "--microbatches": ("-m",)}
"""More names of a flag, as the other commands spell them (-p and -m everywhere)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train a small GPT with a schedule on real ranks (torchrun) and record a measured trace",
        description="Train a small GPT with a schedule on real ranks and record a measured trace.",
    )
    for flag, field, kind, text in FLAGS:
        metavar = field.split(".")[-1].upper()
        parser.add_argument(
            *ALIASES.get(flag, ()), flag, dest=field, type=kind, default=None, metavar=metavar, help=text
        )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="with --schedule-file: its placement, checked (loop, v)",
    )
    parser.add_argument(
        "--notation", choices=NOTATIONS, default="auto", help="with --schedule-file: its notation (auto)"
    )
    parser.add_argument(
        "--nesterov-per-stage",
        dest="optimizer.nesterov_per_stage",
        action="store_true",
        default=None,
        help="nadamw: beta1 of stage s is beta1 + (P-s-1)(0.99 - beta1)/P",
    )
    parser.add_argument(
        "--single-process", action="store_true", default=None, help="all ranks in this process"
    )
    parser.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        default=None,
        help="record losses and steps only, no per-action events (a measurement aid: what recording "
        "costs; trace.json stays empty)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        default=None,
        help="CPU runs: let the OS place the ranks' threads (default: each rank on CPUs of its own, when "
        "there are enough)",
    )
    parser.add_argument("--out", default=None, help="run folder (default runs/<schedule>-p<P>-m<m>)")
    parser.add_argument("--resume", default=None, help="continue this run folder from its latest checkpoint")
    parser.add_argument(
        "--prepare", action="store_true", help="write the run folder, print the torchrun command"
    )
    parser.set_defaults(func=run)


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as RunConfig / optimizer field names."""
    switches = ["single_process", "trace", "pin", "out", "resume"]
    names = [field for _, field, _, _ in FLAGS] + FLAG_SWITCHES + switches
    values = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if "schedule_file" in values:
        values.update(_from_file(values.pop("schedule_file"), values, args))
    if "split" in values:
        try:
            values["split"] = tuple(int(part) for part in values["split"].split(","))
        except ValueError:
            raise ExecutorConfigError(
                f"--split takes comma-separated block counts, got {args.split!r}"
            ) from None
    return values


def _from_file(path: str, values: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig fields of --schedule-file: its name, its CSV, its P, m and chunks (the flags, when
    given, must agree). The layout line goes to stderr."""
    if "schedule" in values:
        raise ExecutorConfigError("--schedule and --schedule-file: give one of them")
    try:
        schedule = read_schedule_file(
            path,
            chunks=values.get("chunks"),
            layout=args.layout,
            notation=args.notation,
            ranks=values.get("stages"),
            microbatches=values.get("microbatches"),
        )
    except ScheduleError as error:
        raise ExecutorConfigError(str(error)) from None
    print(f"pipesim: {layout_line(schedule, path)}", file=sys.stderr)
    return {
        "schedule": schedule.name,
        "schedule_csv": schedule.csv,
        "stages": schedule.ranks,
        "microbatches": schedule.microbatches,
        "chunks": schedule.chunks,
    }


def make_config(values: dict[str, Any]):
    """RunConfig from flags; on --resume the unset ones come from the folder's config.json."""
    from executor.run.runconfig import RunConfig, read_folder_config

    base = RunConfig()
    if values.get("resume"):
        base = read_folder_config(values["resume"], "--resume")[0]
        values = {**values, "out": values["resume"]}
    optimizer = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("optimizer.")}
    plain = {k: v for k, v in values.items() if not k.startswith("optimizer.")}
    plain["optimizer"] = dataclasses.replace(base.optimizer, **optimizer) if optimizer else base.optimizer
    schedule = plain.get("schedule", base.schedule)
    if "chunks" not in plain and not values.get("resume") and schedule in SCHEDULES:
        plain["chunks"] = SCHEDULES[schedule].default_chunks
    if "out" not in plain:
        stages, microbatches = plain.get("stages", base.stages), plain.get("microbatches", base.microbatches)
        plain["out"] = f"runs/{plain.get('schedule', base.schedule)}-p{stages}-m{microbatches}"
    return dataclasses.replace(base, **plain)


def run(args: argparse.Namespace) -> int:
    from executor.run.launch import launch, prepare_only

    config = make_config(given(args))
    return prepare_only(config) if args.prepare else launch(config)

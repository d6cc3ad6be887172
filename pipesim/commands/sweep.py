"""`pipesim sweep`: simulate schedules x P x m (x device) on a process pool and write one CSV.

    pipesim sweep --schedules gpipe,1f1b,2bw -p 2,4,8 -m 8,16 --out sweep.csv
    pipesim sweep --schedules 1f1b,zb-h1 -p 4,8 -m 16,32 --model gpt2-small --device h100-sxm,a100-80gb \\
        --out sweep.csv --jobs 2
    pipesim sweep --schedule-file zbv.csv --schedules 1f1b --model gpt2-small --device h100-sxm,a100-80gb \\
        --out sweep.csv                 # a file's schedule at its own P and m, beside named ones

A progress bar goes to stderr, then the points per second; the CSV (columns: simulator/sweep.py
COLUMNS) is written atomically, in grid order. A point a schedule cannot take gets a row with its
`error` and no metrics. `--backend dask` runs the points on a Dask cluster (the optional `dask` extra):
a local one by default, an existing one with `--scheduler tcp://host:8786`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pipesim.commands.schedules import add_file_flags, schedule_from_file
from pipesim.commands.simulate import (
    add_cost_flags,
    cost_request,
    needs_a_schedule,
    print_notes,
    schedule_names,
)
from pipesim.errors import UsageError
from schedules.registry import ASYNC_DEFAULT_STEPS, DEFAULT_CHUNKS
from simulator.presets import DEVICES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="simulate a grid of schedules x P x m (x device) into a CSV",
        description="Simulate every combination on a process pool; write one CSV row per point.",
    )
    parser.add_argument(
        "--schedules",
        "--schedule",
        dest="schedules",
        metavar="NAMES",
        help="comma list of schedules (and/or --schedule-file)",
    )
    add_file_flags(parser)
    parser.add_argument(
        "-p",
        "--ranks",
        "--stages",
        dest="stages",
        metavar="P,P",
        help="comma list of rank counts (default with --schedule-file: the file's)",
    )
    parser.add_argument(
        "-m",
        "--microbatches",
        metavar="M,M",
        help="comma list of microbatches (default with --schedule-file: the file's)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="K",
        help=f"steps (default 1 sync, {ASYNC_DEFAULT_STEPS} async)",
    )
    parser.add_argument(
        "--chunks", type=int, default=None, metavar="V", help=f"interleaved chunks (default {DEFAULT_CHUNKS})"
    )
    parser.add_argument(
        "--device",
        metavar="PRESETS",
        help=f"comma list of device presets (with --model): {', '.join(DEVICES)}",
    )
    add_cost_flags(parser, device=False)
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="where to write the CSV")
    parser.add_argument(
        "--jobs", type=int, default=None, metavar="N", help="worker processes (default: CPU count)"
    )
    parser.add_argument(
        "--backend",
        choices=("process", "dask"),
        default="process",
        help="where the points run: a process pool (default) or Dask (pip install 'pipesim[dask]')",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="with --backend dask: an existing cluster (default: local)"
    )
    parser.set_defaults(func=run)


def int_list(text: str, flag: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8]; a UsageError naming the flag otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag}: expected a comma list of whole numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{flag}: empty list")
    return values


def run(args: argparse.Namespace) -> int:
    from simulator.sweep import ProgressBar, grid, run_sweep, write_rows  # loads SimPy

    names = schedule_names(args.schedules)
    needs_a_schedule(args, names, "--schedules")
    imported = _file_schedule(args)
    ranks = int_list(args.stages, "-p") if args.stages else [imported.ranks] if imported else []
    microbatches = (
        int_list(args.microbatches, "-m")
        if args.microbatches
        else [imported.microbatches]
        if imported
        else []
    )
    if not ranks or not microbatches:
        raise UsageError(
            "pipesim sweep: the following arguments are required: -p/--stages, -m/--microbatches"
        )
    devices = [d.strip() for d in args.device.split(",")] if args.device else [None]
    requests = [cost_request(args, device=device) for device in devices]
    print_notes(requests[0])
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if args.scheduler and args.backend != "dask":
        raise UsageError("--scheduler is the address of a Dask cluster: give it with --backend dask")
    points = grid(
        names, ranks=ranks, microbatches=microbatches, requests=requests, steps=args.steps, chunks=args.chunks
    )
    if imported is not None:  # the file's schedule, at its own P and m, first
        points[:0] = [_file_point(imported, request) for request in requests]
    jobs = min(jobs, len(points))
    began = time.perf_counter()
    rows = run_sweep(
        points, jobs=jobs, progress=ProgressBar(len(points)), backend=args.backend, scheduler=args.scheduler
    )
    seconds = time.perf_counter() - began
    write_rows(args.out, rows)
    failed = sum(1 for row in rows if row.get("error"))
    note = f" ({failed} could not run; see the error column)" if failed else ""
    where = f"{jobs} worker" + ("s" if jobs > 1 else "") + (" on Dask" if args.backend == "dask" else "")
    rate = f"{len(rows) / seconds:.1f} points/s" if seconds > 0 else "instantly"
    print(f"wrote {args.out}: {len(rows)} points{note}; {seconds:.1f} s, {rate}, {where}", file=sys.stderr)
    return 0


def _file_schedule(args: argparse.Namespace):
    """The --schedule-file's schedule (checked here, once, before any worker starts), or None. A sweep
    takes it at its own P and m: -p and -m, when given, must list those."""
    if not args.schedule_file:
        return None
    imported = schedule_from_file(args, steps=args.steps, ranks=None, microbatches=None)
    for flag, text, found in (
        ("-p", args.stages, imported.ranks),
        ("-m", args.microbatches, imported.microbatches),
    ):
        if text and found not in int_list(text, flag):
            raise UsageError(f"{args.schedule_file} has {flag} {found}, which {flag} {text} does not list")
    return imported


def _file_point(schedule, request):
    from simulator.sweep import SweepPoint

    return SweepPoint(
        schedule=schedule.name,
        ranks=schedule.ranks,
        microbatches=schedule.microbatches,
        steps=schedule.steps,
        chunks=schedule.chunks,
        request=request,
        csv=schedule.csv,  # the file's one step in pipesim's words: what the worker reads again
    )

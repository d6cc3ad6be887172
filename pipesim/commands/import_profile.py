"""`pipesim import-profile`: torch.profiler Chrome traces of a torch.distributed.pipelining run -> a trace.

    pipesim import-profile rank0.json rank1.json --schedule gpipe -m 4 -o trace.json
    pipesim import-profile prof/*.json --schedule 1f1b -m 8 --steps 3 --ranks 1,0 -o trace.json

One profile per rank (torch.profiler writes one per process). The spans name each action but not the
schedule, its size or which pipeline rank a file is: --schedule and -m say that, the ranks come from the
profiles (distributedInfo) or the file order, or --ranks. The result is a measured trace that
`pipesim compare` and `pipesim calibrate` read like the executor's. traces/README.md says what the spans
carry and what they cannot (memory, message sizes).
"""

from __future__ import annotations

import argparse

from pipesim.errors import UsageError
from traces.io import write_trace
from traces.torch_profile import SCHEDULES, import_profiles


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-profile",
        help="import torch.profiler traces of a torch.distributed.pipelining run as a measured trace",
        description="Map the pipelining spans of one torch.profiler Chrome trace per rank onto pipesim's "
        "schedule of the same name and size; check the order; write a measured trace.",
    )
    parser.add_argument("profiles", nargs="+", metavar="PROFILE", help="one Chrome trace (JSON) per rank")
    parser.add_argument("--schedule", required=True, choices=SCHEDULES, help="the schedule that ran")
    parser.add_argument("-m", "--microbatches", type=int, required=True, help="microbatches per step")
    parser.add_argument("--steps", type=int, help="optimizer steps in the profiles (default: what they hold)")
    parser.add_argument(
        "--ranks", metavar="R,R,...", help="the pipeline rank of each profile, in order (default: recorded)"
    )
    parser.add_argument("-o", "--out", required=True, metavar="TRACE.json", help="the trace to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    trace = import_profiles(
        args.profiles,
        schedule=args.schedule,
        microbatches=args.microbatches,
        steps=args.steps,
        ranks=_ranks(args.ranks),
    )
    write_trace(args.out, trace)
    header = trace.schedule
    print(
        f"{args.out}: {header.name}, P = {header.ranks}, m = {header.microbatches}, {header.steps} step(s), "
        f"{len(trace.events)} events from {len(args.profiles)} profile(s)"
    )
    return 0


def _ranks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--ranks takes a comma list of ranks such as 1,0, got {text!r}") from None

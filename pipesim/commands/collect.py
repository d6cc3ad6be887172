"""`pipesim collect`: write a run folder's metrics.jsonl and trace.json again from its rank logs.

    pipesim collect runs/NAME

`pipesim run` and rank 0 of a hand-started torchrun write both files themselves, however the run ends.
This is for what they cannot survive: every process of the run killed at once (a SIGKILL of the whole
job, a machine that went down). A folder that a run owns (locked) is refused.
"""

from __future__ import annotations

import argparse

from pipesim.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="write a run folder's metrics.jsonl and trace.json again from its rank logs",
        description="Write a run folder's metrics.jsonl and trace.json again from its rank logs.",
    )
    parser.add_argument("folder", help="the run folder (holds config.json and ranks/)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from executor.run.collect import collect
    from executor.run.runfolder import RunFolder

    folder = RunFolder(args.folder)
    if not folder.config.is_file():
        raise UsageError(f"collect: {folder.path} holds no config.json (not a run folder)")
    monitor = collect(folder)
    state = "completed" if monitor.completed else "not completed"
    print(
        f"{folder.path}: {len(monitor.metrics)} of {monitor.config.steps} steps in metrics.jsonl, "
        f"{monitor.events} of {monitor.actions} actions in trace.json ({state})"
    )
    return 0

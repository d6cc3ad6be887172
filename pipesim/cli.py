"""The `pipesim` command: one router; each subcommand lives in pipesim/commands/<name>.py.

    pipesim schedules list
    pipesim schedules show 1f1b -p 4 -m 8

A command module exposes `register(subparsers)`, which adds its parser and sets `func` (args -> exit code).
Errors a user can cause (UsageError, ScheduleError, TraceError and the like) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pipesim.errors import USER_ERRORS, UsageError

COMMANDS = (
    "schedules",
    "simulate",
    "sweep",
    "plan",
    "run",
    "collect",
    "compare",
    "calibrate",
    "predict",
    "replay",
    "import_profile",
    "dashboard",
    "study",
    "demo",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipesim", description="Predict, run and compare pipeline-parallel schedules.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        module = f"pipesim.commands.{name}"
        try:
            importlib.import_module(module).register(subparsers)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        print(f"pipesim: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pipesim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pipesim ... | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

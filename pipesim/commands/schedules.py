"""`pipesim schedules`: list the schedules, draw one with its exact analytics, import and export PyTorch CSVs.

    pipesim schedules list
    pipesim schedules show 1f1b -p 4 -m 8
    pipesim schedules show 2bw -p 8 -m 16 --format json
    pipesim schedules export interleaved -p 4 -m 8 --chunks 2 -o interleaved.csv
    pipesim schedules import interleaved.csv

Imports only the schedules package (standard library + networkx), so it starts fast and never loads torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pipesim.commands.readout import legend
from schedules.analytics import analyze
from schedules.costs import DEFAULT_OVERLAP_F_B, Costs
from schedules.csv_io import NOTATIONS, CsvExport, export_csv, read_csv, write_csv
from schedules.graph import validate
from schedules.grid import render_grid
from schedules.imported import LAYOUTS, check_layout, layout_line, read_schedule_file
from schedules.ir import Kind, Schedule, ScheduleError
from schedules.passes import lower
from schedules.registry import (
    ASYNC_DEFAULT_STEPS,
    DEFAULT_CHUNKS,
    SCHEDULES,
    ScheduleInfo,
    build_with_defaults,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedules",
        help="list, show, import and export pipeline schedules",
        description="List, show, import and export pipeline schedules (exact analytics, PyTorch CSV).",
    )
    commands = parser.add_subparsers(dest="schedules_command", required=True, parser_class=type(parser))
    listing = commands.add_parser("list", help="the schedules pipesim knows, with their constraints")
    listing.set_defaults(func=run_list)
    _add_show(commands)
    _add_import(commands)
    _add_export(commands)


def _add_show(commands: argparse._SubParsersAction) -> None:
    show = commands.add_parser(
        "show",
        help="draw a schedule's rank x time grid and its exact analytics",
        description="Draw a schedule's rank x time grid and its exact analytics (or print JSON or CSV).",
    )
    _add_request(show)
    _add_costs(show)
    show.add_argument(
        "--format", choices=("text", "json", "csv"), default="text", help="output (default text)"
    )
    show.add_argument("--comms", action="store_true", help="csv: the comm-lowered form (SEND_F, RECV_F, ...)")
    _add_color(show)
    show.set_defaults(func=run_show)


def _add_import(commands: argparse._SubParsersAction) -> None:
    reader = commands.add_parser(
        "import",
        help="validate a torch.distributed.pipelining schedule CSV and show it",
        description="Read a PyTorch schedule CSV (one row per rank), validate it and show it like `show`.",
    )
    reader.add_argument("file", metavar="FILE.csv", help="the CSV to read")
    _add_notation(reader)
    reader.add_argument("--chunks", type=int, default=None, help="model chunks per rank (default: inferred)")
    _add_layout(reader)
    _add_costs(reader)
    reader.add_argument("--format", choices=("text", "json"), default="text", help="output (default text)")
    _add_color(reader)
    reader.set_defaults(func=run_import)


def _add_export(commands: argparse._SubParsersAction) -> None:
    writer = commands.add_parser(
        "export",
        help="write a schedule as a torch.distributed.pipelining CSV",
        description="Write one step of a schedule as a PyTorch schedule CSV (compute actions by default).",
    )
    _add_request(writer)
    writer.add_argument("-o", "--output", required=True, metavar="FILE.csv", help="where to write the CSV")
    writer.add_argument("--comms", action="store_true", help="the comm-lowered form (SEND_F, RECV_F, ...)")
    writer.set_defaults(func=run_export)


def _add_request(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("schedule", metavar="SCHEDULE", help=f"one of: {', '.join(SCHEDULES)}")
    add_size_flags(parser)


def add_size_flags(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """-p, -m, --steps and --chunks, as every command that builds one schedule takes them (`required`
    False: the command checks -p and -m itself, as `simulate` does when --cluster derives them)."""
    parser.add_argument(
        "-p",
        "--ranks",
        "--stages",
        dest="stages",
        type=int,
        required=required,
        metavar="P",
        help="ranks P, one pipeline stage each (--stages: the same)",
    )
    parser.add_argument(
        "-m", "--microbatches", type=int, required=required, metavar="M", help="microbatches per step"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="K",
        help=f"optimizer steps (default: 1 for synchronous schedules, {ASYNC_DEFAULT_STEPS} for asynchronous "
        "ones, so that their steady state shows)",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=None,
        metavar="V",
        help=f"model chunks per rank, interleaved only (default {DEFAULT_CHUNKS})",
    )


def add_file_flags(parser: argparse.ArgumentParser) -> None:
    """--schedule-file, with --layout and --notation: a PyTorch CSV wherever a schedule name goes (the
    command's --chunks, -p and -m, when given, must be what the file shows)."""
    group = parser.add_argument_group("a schedule from a file")
    group.add_argument(
        "--schedule-file",
        metavar="FILE.csv",
        help="a torch.distributed.pipelining schedule CSV (old or new notation, with or without sends and "
        "receives): P, m, the stage placement and chunks are read from it and printed",
    )
    _add_layout(group)
    _add_notation(group)


def _add_layout(parser) -> None:
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="the file's placement, checked: loop (stage s on rank s mod P) or v (rank r holds stages r and "
        "2P-1-r); default: inferred",
    )


def _add_notation(parser) -> None:
    parser.add_argument(
        "--notation",
        choices=NOTATIONS,
        default="auto",
        help="new: I/W/B(full); old: B(inputs)/W/BW(full); auto (default): old if a cell says BW, "
        "or W without any I",
    )


def schedule_from_file(
    args: argparse.Namespace, *, steps: int | None, ranks: int | None, microbatches: int | None
) -> Schedule:
    """The lowered schedule of --schedule-file; its layout line goes to stderr (stdout may be JSON)."""
    schedule = read_schedule_file(
        args.schedule_file,
        steps=steps or 1,
        chunks=args.chunks,
        layout=args.layout,
        notation=args.notation,
        ranks=ranks,
        microbatches=microbatches,
    )
    print(f"pipesim: {layout_line(schedule, args.schedule_file)}", file=sys.stderr)
    return schedule


def _cost(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _cost(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def _add_costs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("costs (time units)")
    group.add_argument("--tf", type=_cost, default=1.0, help="forward of one stage (default 1)")
    group.add_argument("--tb", type=_cost, default=2.0, help="full backward (default 2)")
    group.add_argument("--ti", type=_cost, default=None, help="backward for inputs (default tb / 2)")
    group.add_argument("--tw", type=_cost, default=None, help="backward for weights (default tb / 2)")
    group.add_argument(
        "--overlap-f-b",
        type=_fraction,
        default=DEFAULT_OVERLAP_F_B,
        metavar="X",
        help=f"an OVERLAP_F_B pair takes its longer half + X x its shorter (default {DEFAULT_OVERLAP_F_B})",
    )


def _add_color(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the grid (auto: when stdout is a terminal and NO_COLOR is unset)",
    )


# --- the commands ---------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    rows = [("name", "kind", "constraints", "PyTorch's", "summary")]
    for info in SCHEDULES.values():
        kind = "async" if info.asynchronous else "sync"
        pytorch = (info.pytorch or "-").replace(" (one stage per rank)", " (v = 1)")
        rows.append((info.name, kind, ", ".join(constraints(info)) or "-", pytorch, info.summary))
    print(format_table(rows))
    return 0


def run_show(args: argparse.Namespace) -> int:
    schedule = build_request(args)
    if args.format == "csv":
        _print_csv(export_csv(schedule, comms=args.comms))
        return 0
    validate(schedule)
    _print_schedule(schedule, args)
    return 0


def run_import(args: argparse.Namespace) -> int:
    schedule = lower(read_csv(args.file, notation=args.notation, chunks=args.chunks))
    try:
        validate(schedule)
    except ScheduleError as error:  # a headline, then the rank x position grid with the bad cell marked
        raise ScheduleError(f"{args.file}: invalid schedule: {error}") from None
    check_layout(schedule, args.layout, args.file)
    if args.format == "text":
        print(layout_line(schedule, args.file))
    _print_schedule(schedule, args)
    return 0


def run_export(args: argparse.Namespace) -> int:
    schedule = build_request(args)
    export = write_csv(args.output, schedule, comms=args.comms)
    _warn(export.warnings)
    rows = export.text.count("\n")
    print(
        f"wrote {args.output} ({rows} ranks, step 0 of {schedule.name}, {schedule.microbatches} microbatches)"
    )
    return 0


# --- helpers --------------------------------------------------------------------------------------


def constraints(info: ScheduleInfo) -> list[str]:
    """What a schedule needs, in flag terms."""
    needs = []
    if info.needs_m_ge_p:
        needs.append("m >= P")
    if info.needs_m_ge_2p:
        needs.append("m >= 2P")
    if info.needs_m_multiple_of_p:
        needs.append("m % P == 0")
    if info.needs_even_p:
        needs.append("P even")
    if info.uses_chunks:
        needs.append("--chunks V")
    if info.v_shaped:
        needs.append("V: 2 stages per rank")
    if info.splits_backward:
        needs.append("B split into I + W")
    if info.overlaps:
        needs.append("OVERLAP_F_B pairs")
    return needs


def build_request(args: argparse.Namespace) -> Schedule:
    """The lowered schedule the flags ask for; defaults for steps and chunks depend on the schedule."""
    return build_with_defaults(args.schedule, args.stages, args.microbatches, args.steps, args.chunks)


def costs_from(args: argparse.Namespace) -> Costs:
    return Costs(f=args.tf, b=args.tb, i=args.ti, w=args.tw, overlap_f_b=args.overlap_f_b)


def use_color(choice: str) -> bool:
    if choice == "auto":
        return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    return choice == "always"


def _print_schedule(schedule: Schedule, args: argparse.Namespace) -> None:
    costs = costs_from(args)
    analytics = analyze(schedule, costs).to_dict()
    if args.format == "json":
        print(format_json(analytics))
        return
    print(_title(schedule, costs))
    print(render_grid(schedule, costs, color=use_color(args.color)))
    print()
    print(format_analytics(analytics))
    print()
    print(legend(ratio=True, chunks=schedule.chunks))


def format_json(data: dict[str, Any]) -> str:
    """One JSON object, one key per line, lists kept on their key's line."""
    items = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()]
    return "{\n" + ",\n".join(items) + "\n}"


def _title(schedule: Schedule, costs: Costs) -> str:
    kind = "synchronous" if schedule.synchronous else f"asynchronous ({schedule.versioning})"
    chunks = f", {schedule.chunks} chunks per rank" if schedule.chunks > 1 else ""
    steps = f"{schedule.steps} step" + ("s" if schedule.steps > 1 else "")
    pairs = any(action.kind is Kind.OVERLAP_F_B for action in schedule.actions[0])
    overlap = f"; an overlapped pair: the longer half + {costs.overlap_f_b:g} x the shorter" if pairs else ""
    return (
        f"{schedule.name}: {kind}, P = {schedule.ranks} ranks, m = {schedule.microbatches} microbatches, "
        f"{steps}{chunks}; t_F = {costs.f:g}, t_B = {costs.b:g} (I {costs.input_backward:g} + "
        f"W {costs.weight_backward:g}){overlap}"
    )


def format_analytics(analytics: dict[str, Any]) -> str:
    """Scalars as 'name  value' lines, then the per-stage and per-rank lists as aligned tables."""
    scalars = ("makespan", "step_time", "bubble_fraction", "bubble_ratio")
    lines = [format_table([(name.replace("_", " "), number(analytics[name])) for name in scalars])]
    per_stage = ("peak_activations", "weight_versions", "delay", "mismatches")
    per_rank = ("peak_activations_per_rank", "utilization")
    for unit, keys in (("stage", per_stage), ("rank", per_rank)):
        count = len(analytics[keys[0]])
        header = (unit, *(str(index) for index in range(count)))
        rows = [
            (key.replace("_per_rank", "").replace("_", " "), *map(number, analytics[key])) for key in keys
        ]
        lines += ["", format_table([header, *rows], right=True)]
    return "\n".join(lines)


def number(value: Any) -> str:
    """An int as is, a float with 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[tuple[str, ...]], *, right: bool = False) -> str:
    """Aligned columns, two spaces apart; the first column left-aligned, the rest right-aligned if asked."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if right and column else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _print_csv(export: CsvExport) -> None:
    _warn(export.warnings)
    sys.stdout.write(export.text)


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        print(f"pipesim: warning: {warning}", file=sys.stderr)

"""`pipesim compare A B`: two traces side by side, predicted or measured in any combination.

    pipesim compare runs/1f1b predicted.json            # a run folder means its trace.json
    pipesim compare runs/1f1b predicted.json --json     # one JSON object (traces.compare.Comparison)

Errors are B against A (B - A; relative errors divided by A), so put the reference (usually the
measured run) first. The last line is the verdict: `agree` when the step time is within 3%, every
rank's utilization within 3 points, the delay per stage equal and the action order the same.
"""

from __future__ import annotations

import argparse
import json
import os

from pipesim.commands.schedules import format_table, number
from pipesim.commands.simulate import seconds, size
from traces.compare import Comparison, Pair, compare_traces
from traces.io import load_trace, trace_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two traces (predicted or measured): metrics, per-kind times, action order",
        description="Compare trace B against trace A (errors are B - A). A and B are trace files or run "
        "folders (their trace.json), simulated or measured in any combination.",
    )
    parser.add_argument("a", metavar="A", help="the reference trace or run folder (usually measured)")
    parser.add_argument("b", metavar="B", help="the trace or run folder to check against A")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    a = load_trace(args.a)
    b = a if os.path.samefile(trace_path(args.a), trace_path(args.b)) else load_trace(args.b)
    comparison = compare_traces(a, b, labels=(args.a, args.b))  # one file: read and measured once
    if args.json:
        print(json.dumps(comparison.to_dict(), indent=2, allow_nan=False))
    else:
        print(format_comparison(comparison))
    return 0


def format_comparison(comparison: Comparison) -> str:
    """Summary, per rank, per stage, per kind, order check, verdict."""
    sections = [_heading(comparison), _summary(comparison)]
    if comparison.same_shape:
        sections += [_per_rank(comparison), _per_stage(comparison)]
    sections += [_per_kind(comparison), _order(comparison), f"verdict: {comparison.verdict()}"]
    return "\n\n".join(sections)


def _heading(comparison: Comparison) -> str:
    lines = []
    for name, label, metrics in zip("AB", comparison.labels, (comparison.a, comparison.b), strict=True):
        steps = f"{metrics.steps} step" + ("s" if metrics.steps != 1 else "")
        lines.append(
            f"{name}: {label} ({metrics.source}, {metrics.schedule}, P = {metrics.ranks}, "
            f"m = {metrics.microbatches}, {steps})"
        )
    return "\n".join(lines)


def difference(pair: Pair) -> str:
    error = pair.abs_error
    return "-" if error is None else f"{error:+g}"


def _summary(comparison: Comparison) -> str:
    rows = [("", "A", "B", "error")]
    step, makespan = comparison.scalar("step_time"), comparison.scalar("makespan")
    rows.append(("step time", seconds(step.a), seconds(step.b), step.relative_text))
    tokens = comparison.scalar("tokens_per_s")
    rows.append(("tokens/s", f"{tokens.a:,.0f}", f"{tokens.b:,.0f}", tokens.relative_text))
    bubble = comparison.scalar("bubble_fraction")
    rows.append(("bubble fraction", number(bubble.a), number(bubble.b), bubble.points_text))
    rows.append(("makespan", seconds(makespan.a), seconds(makespan.b), makespan.relative_text))
    return format_table(rows, right=True)


def _per_rank(comparison: Comparison) -> str:
    rows = [("rank", "utilization A", "B", "error", "peak memory A", "B", "error")]
    utilization, memory = comparison.per_index("utilization"), comparison.per_index("peak_memory")
    for rank, (u, p) in enumerate(zip(utilization, memory, strict=True)):
        rows.append(
            (str(rank), number(u.a), number(u.b), u.points_text, _bytes(p.a), _bytes(p.b), p.relative_text)
        )
    return format_table(rows, right=True)


def _bytes(value: float | None) -> str:
    return size(None if value is None else int(value))


def _per_stage(comparison: Comparison) -> str:
    rows = [("stage", "delay A", "B", "versions A", "B", "mismatches A", "B")]
    columns = [comparison.per_index(name) for name in ("delay", "weight_versions", "mismatches")]
    for stage, pairs in enumerate(zip(*columns, strict=True)):
        rows.append((str(stage), *(f"{value:g}" for pair in pairs for value in (pair.a, pair.b))))
    return format_table(rows, right=True)


def _per_kind(comparison: Comparison) -> str:
    rows = [("rank", "kind", "count A", "B", "mean A", "B", "error")]
    for row in comparison.kinds:
        mean = row.mean
        rows.append(
            (
                str(row.rank),
                row.kind,
                str(row.count[0]),
                str(row.count[1]),
                "-" if mean.a is None else seconds(mean.a),
                "-" if mean.b is None else seconds(mean.b),
                mean.relative_text,
            )
        )
    note = "mean duration per rank and kind (SEND and RECV: measured, the host's part; simulated, the wire)"
    return note + "\n" + format_table(rows, right=True)


def _order(comparison: Comparison) -> str:
    order = comparison.order
    if not order.applies:
        return f"action order: not compared ({order.reason})"
    if order.equal:
        return "action order: the same on every rank (versions included)"
    lines = ["action order: differs"]
    for rank, position, a, b in order.differences:
        lines.append(
            f"  rank {rank}, position {position}: A ran {a or '(nothing)'}, B ran {b or '(nothing)'}"
        )
    return "\n".join(lines)

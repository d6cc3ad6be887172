"""Metrics and comparisons -> table rows (lists of dicts) for st.dataframe: what the commands print.

    metrics_rows({"1f1b": metrics, "2bw": other})    # Explore: one row per schedule
    comparison_tables(compare_traces(a, b))          # Compare: `pipesim compare`'s tables and errors

Errors are B against A as in `pipesim compare`: relative for times and sizes (+3.1%), in points for
shares (+1.2 pts). No Streamlit here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dashboard.figures.style import GIB
from dashboard.figures.style import format_seconds as seconds
from traces.compare import Comparison
from traces.metrics import Metrics

Rows = list[dict[str, Any]]
MISSING = "-"
"""How every table shows a value that does not exist, as the commands print it (st.dataframe's
placeholder, where Streamlit writes "None", and the cells formatted here)."""


def gib(value: float | None) -> str:
    return MISSING if value is None else f"{value / GIB:.3f} GiB"


def metrics_rows(metrics: Mapping[str, Metrics], *, workload: bool = True) -> Rows:
    """One row per schedule: step time, throughput, bubble, peak memory and staleness at a glance.
    Without a workload (unit costs) throughput is in microbatches/s, as `pipesim simulate` says."""
    rows = []
    for name, metric in metrics.items():
        peaks = [peak for peak in metric.peak_memory if peak is not None]
        if workload:
            throughput = {"tokens/s": round(metric.tokens_per_s), "samples/s": round(metric.samples_per_s, 2)}
        else:
            throughput = {"microbatches/s": round(metric.samples_per_s, 4)}
        rows.append(
            {
                "schedule": name,
                "step time": seconds(metric.step_time),
                **throughput,
                "bubble fraction": round(metric.bubble_fraction, 4),
                "peak memory (fullest rank)": gib(max(peaks)) if peaks and max(peaks) else MISSING,
                "weight versions (max)": max(metric.weight_versions),
                "delay (max)": max(metric.delay),
                "mismatches": sum(metric.mismatches),
                "makespan": seconds(metric.makespan),
            }
        )
    return rows


def comparison_tables(comparison: Comparison) -> dict[str, Rows]:
    """`pipesim compare`'s tables: summary, per rank, per stage (same P only) and per kind."""
    tables = {"summary": _summary(comparison)}
    if comparison.same_shape:
        tables["per rank"] = _per_rank(comparison)
        tables["per stage"] = _per_stage(comparison)
    tables["per kind"] = _per_kind(comparison)
    return tables


def _summary(comparison: Comparison) -> Rows:
    step, makespan = comparison.scalar("step_time"), comparison.scalar("makespan")
    tokens, bubble = comparison.scalar("tokens_per_s"), comparison.scalar("bubble_fraction")
    return [
        {"": "step time", "A": seconds(step.a), "B": seconds(step.b), "error": step.relative_text},
        {"": "tokens/s", "A": f"{tokens.a:,.0f}", "B": f"{tokens.b:,.0f}", "error": tokens.relative_text},
        {"": "bubble fraction", "A": f"{bubble.a:.4f}", "B": f"{bubble.b:.4f}", "error": bubble.points_text},
        {"": "makespan", "A": seconds(makespan.a), "B": seconds(makespan.b), "error": makespan.relative_text},
    ]


def _per_rank(comparison: Comparison) -> Rows:
    utilization, memory = comparison.per_index("utilization"), comparison.per_index("peak_memory")
    return [
        {
            "rank": rank,
            "utilization A": f"{u.a:.3f}",
            "utilization B": f"{u.b:.3f}",
            "error": u.points_text,
            "peak memory A": gib(p.a),
            "peak memory B": gib(p.b),
            "memory error": p.relative_text,
        }
        for rank, (u, p) in enumerate(zip(utilization, memory, strict=True))
    ]


def _per_stage(comparison: Comparison) -> Rows:
    names = ("delay", "weight_versions", "mismatches")
    columns = [comparison.per_index(name) for name in names]
    rows = []
    for stage, pairs in enumerate(zip(*columns, strict=True)):
        row: dict[str, Any] = {"stage": stage}
        for name, pair in zip(("delay", "versions", "mismatches"), pairs, strict=True):
            row[f"{name} A"], row[f"{name} B"] = pair.a, pair.b
        rows.append(row)
    return rows


def _per_kind(comparison: Comparison) -> Rows:
    return [
        {
            "rank": row.rank,
            "kind": row.kind,
            "count A": row.count[0],
            "count B": row.count[1],
            "mean A": seconds(row.mean.a),
            "mean B": seconds(row.mean.b),
            "error": row.mean.relative_text,
        }
        for row in comparison.kinds
    ]


def order_lines(comparison: Comparison) -> list[str]:
    """The action-order check in words, as `pipesim compare` prints it."""
    order = comparison.order
    if not order.applies:
        return [f"action order: not compared ({order.reason})"]
    if order.equal:
        return ["action order: the same on every rank (versions included)"]
    return ["action order: differs"] + [
        f"rank {rank}, position {position}: A ran {a or '(nothing)'}, B ran {b or '(nothing)'}"
        for rank, position, a, b in order.differences
    ]

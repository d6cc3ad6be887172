"""Compare two traces, predicted or measured in any combination: metric by metric, kind by kind, action by
action, and a one-line verdict.

    from traces.compare import compare_traces
    comparison = compare_traces(read_trace("runs/a/trace.json"), read_trace("predicted.json"))
    print(comparison.verdict())         # `pipesim compare A B` prints the tables, then this line
    comparison.to_dict()["step_time"]   # {"a": ..., "b": ..., "abs_error": ..., "rel_error": ...}

Errors are always B against A: abs_error = b - a, rel_error = (b - a) / a. Utilization and bubble are
fractions, so their error is in points (b - a, x 100 when printed). The action order is compared rank by
rank on the order each rank ran (traces.metrics.executed_schedule: compute and receives in the order they
ran, then sends), with the weight version each action read or wrote, so two traces "ran the same way"
only if every rank ran the same actions in the same order on the same versions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from schedules.ir import COMM_KINDS, Action
from traces.columnar.columns import columns_of
from traces.columnar.compare import first_differences, kind_totals
from traces.metrics import Metrics, compute_metrics, executed_schedule
from traces.schema import Trace

KIND_GROUPS = ("F", "B", "I", "W", "OPT", "OVERLAP_F_B", "SEND", "RECV")
"""The per-kind table's rows: compute kinds as they are, every send kind as SEND, every receive as RECV
(OVERLAP_F_B: the markers of overlapped pairs, whose halves count as their F and B)."""

STEP_TIME_TOLERANCE = 0.03
"""Relative step-time error under which the verdict says the traces agree (3%)."""
UTILIZATION_TOLERANCE = 0.03
"""Utilization error, in fractions, under which the verdict says the traces agree (3 points)."""


@dataclass(frozen=True, kw_only=True)
class Pair:
    """One quantity in both traces; None where a trace does not have it (e.g. memory not recorded)."""

    a: float | None
    b: float | None

    @property
    def abs_error(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def rel_error(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        if self.a == 0:
            return 0.0 if self.b == 0 else math.inf
        return (self.b - self.a) / self.a

    @property
    def relative_text(self) -> str:
        """The relative error as people read it: '+3.1%', 'inf' (A is 0), '-' (a side is missing)."""
        error = self.rel_error
        if error is None:
            return "-"
        return "inf" if math.isinf(error) else f"{error:+.1%}"

    @property
    def points_text(self) -> str:
        """The difference of two fractions in points: '+1.2 pts', or '-'."""
        error = self.abs_error
        return "-" if error is None else f"{error * 100:+.1f} pts"

    def to_dict(self, *, relative: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.a, "b": self.b, "abs_error": self.abs_error}
        if relative:
            error = self.rel_error
            out["rel_error"] = None if error is None or math.isinf(error) else error
        return out


@dataclass(frozen=True, kw_only=True)
class KindRow:
    """One rank and kind of action: how many ran and their mean duration (seconds) in each trace."""

    rank: int
    kind: str
    """One of KIND_GROUPS."""
    count: tuple[int, int]
    """Events of this kind on this rank in A and in B."""
    mean: Pair
    """Mean duration in seconds."""

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "kind": self.kind, "count": list(self.count), **self.mean.to_dict()}


@dataclass(frozen=True, kw_only=True)
class OrderCheck:
    """Did the two traces run the same actions in the same order on every rank?"""

    applies: bool
    """False when the traces ran different schedules or sizes (then `reason` says why)."""
    equal: bool
    """Every rank ran the same actions, versions included, in the same order."""
    reason: str = ""
    """Why the check does not apply."""
    differences: tuple[tuple[int, int, str | None, str | None], ...] = ()
    """Per differing rank: (rank, position, A's action, B's action), the first difference; None where
    one trace's list ended."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "applies": self.applies,
            "equal": self.equal,
            "reason": self.reason,
            "first_differences": [
                {"rank": rank, "position": position, "a": a, "b": b}
                for rank, position, a, b in self.differences
            ],
        }


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Everything `pipesim compare` reports about trace B against trace A."""

    labels: tuple[str, str]
    """What A and B are (file names, or 'measured'/'simulated')."""
    a: Metrics
    b: Metrics
    order: OrderCheck
    kinds: tuple[KindRow, ...]

    @property
    def same_shape(self) -> bool:
        """Same P, stages and steps: per-rank and per-stage lists can be set side by side."""
        return (self.a.ranks, self.a.stages) == (self.b.ranks, self.b.stages)

    def scalar(self, name: str) -> Pair:
        return Pair(a=float(getattr(self.a, name)), b=float(getattr(self.b, name)))

    def per_index(self, name: str) -> list[Pair]:
        """A per-rank or per-stage metric side by side (as long as the shorter list)."""
        values_a, values_b = getattr(self.a, name), getattr(self.b, name)
        return [Pair(a=x, b=y) for x, y in zip(values_a, values_b, strict=False)]

    @property
    def delay_equal(self) -> bool:
        return self.a.delay == self.b.delay

    @property
    def versions_equal(self) -> bool:
        return self.a.weight_versions == self.b.weight_versions

    @property
    def mismatches_equal(self) -> bool:
        return self.a.mismatches == self.b.mismatches

    def worst_utilization_error(self) -> float:
        """Largest |utilization error| over the ranks, in fractions (0 when not comparable)."""
        errors = [abs(pair.abs_error or 0.0) for pair in self.per_index("utilization")]
        return max(errors, default=0.0)

    def agrees(
        self, *, step_tolerance: float = STEP_TIME_TOLERANCE, util_tolerance: float = UTILIZATION_TOLERANCE
    ) -> bool:
        """Within the tolerances on step time and every rank's utilization, same staleness and order."""
        step_error = self.scalar("step_time").rel_error
        return (
            self.same_shape
            and step_error is not None
            and abs(step_error) <= step_tolerance
            and self.worst_utilization_error() <= util_tolerance
            and self.delay_equal
            and (self.order.equal or not self.order.applies)
        )

    def verdict(self) -> str:
        """One line: do the traces agree, and if not, the biggest reasons why."""
        return verdict(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every metric as {"a", "b", "abs_error"(, "rel_error")}, the order check, the
        per-kind table and the verdict."""

        def lists(name: str, *, relative: bool) -> list[dict[str, Any]]:
            return [pair.to_dict(relative=relative) for pair in self.per_index(name)]

        throughput = {
            key: Pair(a=getattr(self.a, key), b=getattr(self.b, key)).to_dict()
            for key in ("samples_per_s", "tokens_per_s")
        }
        return {
            "a": {"label": self.labels[0], "source": self.a.source, "schedule": self.a.schedule},
            "b": {"label": self.labels[1], "source": self.b.source, "schedule": self.b.schedule},
            "step_time": self.scalar("step_time").to_dict(),
            "makespan": self.scalar("makespan").to_dict(),
            "throughput": throughput,
            "bubble_fraction": self.scalar("bubble_fraction").to_dict(relative=False),
            "utilization": lists("utilization", relative=False),
            "bubble": lists("bubble", relative=False),
            "peak_memory": lists("peak_memory", relative=True),
            "delay": lists("delay", relative=False),
            "weight_versions": lists("weight_versions", relative=False),
            "mismatches": lists("mismatches", relative=False),
            "delay_equal": self.delay_equal,
            "versions_equal": self.versions_equal,
            "mismatches_equal": self.mismatches_equal,
            "order_equal": self.order.equal,
            "order": self.order.to_dict(),
            "per_kind": [row.to_dict() for row in self.kinds],
            "agrees": self.agrees(),
            "verdict": self.verdict(),
        }


def compare_traces(a: Trace, b: Trace, *, labels: tuple[str, str] = ("A", "B")) -> Comparison:
    """Compare trace B against trace A (errors are B - A)."""
    metrics = compute_metrics(a)
    return Comparison(
        labels=labels,
        a=metrics,
        b=metrics if b is a else compute_metrics(b),
        order=check_order(a, b),
        kinds=tuple(kind_table(a, b)),
    )


def check_order(a: Trace, b: Trace) -> OrderCheck:
    """Rank by rank, the first position where the two traces ran different actions."""
    reason = _order_mismatch_reason(a, b)
    if reason:
        return OrderCheck(applies=False, equal=False, reason=reason)
    columns_a, columns_b = columns_of(a), columns_of(b)
    if columns_a is not None and columns_b is not None:
        differences = first_differences(columns_a, columns_b, a.schedule.ranks)
        return OrderCheck(applies=True, equal=not differences, differences=tuple(differences))
    orders_a, orders_b = executed_schedule(a).actions, executed_schedule(b).actions
    differences = []
    for rank, (ours, theirs) in enumerate(zip(orders_a, orders_b, strict=True)):
        position = _first_difference(ours, theirs)
        if position is not None:
            differences.append((rank, position, _text(ours, position), _text(theirs, position)))
    return OrderCheck(applies=True, equal=not differences, differences=tuple(differences))


def _order_mismatch_reason(a: Trace, b: Trace) -> str:
    fields = ("name", "ranks", "microbatches", "steps", "chunks", "placement")
    for name in fields:
        left, right = getattr(a.schedule, name), getattr(b.schedule, name)
        if left != right:
            label = {"name": "schedule", "ranks": "P", "microbatches": "m"}.get(name, name)
            return f"the traces ran different schedules ({label} {left} against {right})"
    return ""


def _first_difference(ours: tuple[Action, ...], theirs: tuple[Action, ...]) -> int | None:
    for position, (x, y) in enumerate(zip(ours, theirs, strict=False)):
        if x != y:
            return position
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def _text(actions: tuple[Action, ...], position: int) -> str | None:
    return str(actions[position]) if position < len(actions) else None


def kind_group(action: Action) -> str:
    """The per-kind table's row of an action (KIND_GROUPS)."""
    if action.kind in COMM_KINDS:
        return "SEND" if action.kind.value.startswith("SEND") else "RECV"
    return action.kind.value


def kind_table(a: Trace, b: Trace) -> list[KindRow]:
    """Per rank and kind: counts and mean durations in both traces (rows where either has events)."""
    sums = [_durations(a), _durations(b)]
    keys = sorted(set(sums[0]) | set(sums[1]), key=lambda key: (key[0], KIND_GROUPS.index(key[1])))
    rows = []
    for key in keys:
        (count_a, total_a), (count_b, total_b) = (side.get(key, (0, 0.0)) for side in sums)
        rows.append(
            KindRow(
                rank=key[0],
                kind=key[1],
                count=(count_a, count_b),
                mean=Pair(
                    a=total_a / count_a if count_a else None,
                    b=total_b / count_b if count_b else None,
                ),
            )
        )
    return rows


def _durations(trace: Trace) -> dict[tuple[int, str], tuple[int, float]]:
    columns = columns_of(trace)
    if columns is not None and not columns.signed_zero():
        return kind_totals(columns, kind_group, KIND_GROUPS)
    totals: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for event in trace.events:
        entry = totals[(event.rank, kind_group(event.action))]
        entry[0] += 1
        entry[1] += event.end - event.start
    return {key: (int(count), total) for key, (count, total) in totals.items()}


def verdict(comparison: Comparison) -> str:
    """`agree` or `differ`, with the step-time error, the worst utilization error and what else differs."""
    step = comparison.scalar("step_time").rel_error
    parts = []
    if step is not None and not math.isinf(step):
        slower = "slower" if step > 0 else "faster"
        parts.append(f"step time {step:+.1%}" + (f" ({comparison.labels[1]} {slower})" if step else ""))
    if comparison.same_shape:
        errors = [abs(pair.abs_error or 0.0) for pair in comparison.per_index("utilization")]
        worst = max(range(len(errors)), key=errors.__getitem__, default=None)
        if worst is not None:
            parts.append(f"utilization within {errors[worst] * 100:.1f} points (worst: rank {worst})")
        if not comparison.delay_equal:
            parts.append("delay per stage differs")
    else:
        parts.append(f"P = {comparison.a.ranks} against {comparison.b.ranks}: no per-rank comparison")
    order = comparison.order
    if not order.applies:
        parts.append(order.reason)
    elif order.equal:
        parts.append("same action order on every rank")
    else:
        parts.append(f"action order differs on {len(order.differences)} rank(s)")
    if not comparison.agrees():
        parts.extend(_largest_kind_difference(comparison))
    head = "agree" if comparison.agrees() else "differ"
    return f"{head}: " + "; ".join(parts)


def _largest_kind_difference(comparison: Comparison) -> list[str]:
    """Where B is most off, among compute kinds that both traces ran often enough to trust a mean."""
    candidates = [
        row
        for row in comparison.kinds
        if row.kind not in ("SEND", "RECV") and row.mean.rel_error is not None and min(row.count) > 0
    ]
    if not candidates:
        return []
    row = max(candidates, key=lambda r: abs(r.mean.rel_error or 0.0))
    error = row.mean.rel_error or 0.0
    if math.isinf(error) or abs(error) < STEP_TIME_TOLERANCE:
        return []
    return [f"largest per-kind difference: {row.kind} on rank {row.rank}, mean duration {error:+.1%}"]

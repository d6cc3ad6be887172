"""traces.compare: metric, per-kind and order comparisons of two traces, and the verdict.

.venv/bin/pytest tests/traces/test_compare.py -q
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from schedules import build
from simulator import CostModel, simulate
from traces.compare import compare_traces
from traces.schema import Trace


def trace_of(name: str, costs: CostModel, ranks: int = 3, microbatches: int = 6, steps: int = 3) -> Trace:
    return simulate(build(name, ranks, microbatches, steps=steps), costs).trace()


UNIT = CostModel.uniform(forward=1.0, backward=2.0, latency=0.25)


def test_a_trace_against_itself_agrees_exactly() -> None:
    trace = trace_of("1f1b", UNIT)
    comparison = compare_traces(trace, trace)
    data = comparison.to_dict()
    assert data["step_time"]["rel_error"] == 0 and data["step_time"]["a"] == data["step_time"]["b"]
    assert all(pair["abs_error"] == 0 for pair in data["utilization"])
    assert data["order_equal"] and data["delay_equal"] and comparison.agrees()
    assert data["verdict"].startswith("agree: step time +0.0%")


def test_twice_the_cost_is_twice_the_step_time_with_the_same_utilization() -> None:
    # Every time scaled by 2 (latency too): the schedule is the same picture at half the speed.
    slow = CostModel.uniform(forward=2.0, backward=4.0, latency=0.5)
    comparison = compare_traces(trace_of("1f1b", UNIT), trace_of("1f1b", slow), labels=("fast", "slow"))
    assert comparison.scalar("step_time").rel_error == pytest.approx(1.0)
    assert comparison.scalar("tokens_per_s").rel_error == pytest.approx(-0.5)
    assert all(pair.abs_error == pytest.approx(0) for pair in comparison.per_index("utilization"))
    assert comparison.order.equal and not comparison.agrees()
    rows = {(row.rank, row.kind): row for row in comparison.kinds}
    assert rows[(0, "F")].mean.rel_error == pytest.approx(1.0) and rows[(0, "F")].count == (18, 18)
    assert "step time +100.0% (slow slower)" in comparison.verdict()
    assert comparison.verdict().startswith("differ:")


def test_other_schedules_compare_on_the_summary_and_say_why_not_the_order() -> None:
    comparison = compare_traces(trace_of("1f1b", UNIT), trace_of("2bw", UNIT))
    assert not comparison.order.applies and not comparison.order.equal
    assert "different schedules (schedule 1f1b against 2bw)" in comparison.order.reason
    data = comparison.to_dict()
    assert data["delay_equal"] is False and data["delay"][0] == {"a": 0, "b": 1, "abs_error": 1}
    assert data["step_time"]["rel_error"] < 0  # no flush: 2BW is faster
    assert comparison.order.reason in comparison.verdict()


def test_the_first_differing_action_of_each_rank_is_named() -> None:
    # Swap rank 1's first two compute events (their times too): rank 1 "ran" them in the other order.
    trace = trace_of("gpipe", UNIT)
    events = list(trace.events)
    first, second = [i for i, e in enumerate(events) if e.rank == 1 and e.stream == "compute"][:2]
    a, b = events[first], events[second]
    events[first] = replace(a, action=b.action)
    events[second] = replace(b, action=a.action)
    comparison = compare_traces(trace, replace(trace, events=tuple(events)))
    assert comparison.order.applies and not comparison.order.equal
    [(rank, _, ours, theirs)] = comparison.order.differences
    assert rank == 1 and (ours, theirs) == (str(a.action), str(b.action))
    assert "action order differs on 1 rank(s)" in comparison.verdict()


def test_different_p_compares_only_the_summary() -> None:
    comparison = compare_traces(trace_of("1f1b", UNIT, ranks=2), trace_of("1f1b", UNIT, ranks=4))
    assert not comparison.same_shape and not comparison.agrees()
    assert "P = 2 against 4: no per-rank comparison" in comparison.verdict()
    assert comparison.to_dict()["step_time"]["b"] > 0

"""Metrics read off a trace's events, whatever clock made them (hand-made "measured" traces here).

.venv/bin/pytest tests/traces/test_metrics.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schedules import build
from schedules.ir import Versioning, linear_layout, parse_action
from simulator import CostModel, simulate
from traces.io import read_trace, write_trace
from traces.metrics import compute_metrics, executed_schedule, memory_series
from traces.schema import Event, ScheduleHeader, Trace, stream_of


def trace_of(
    ranks: int, steps: int, versioning: Versioning, rows: list[tuple], meta: dict | None = None
) -> Trace:
    """rows: (rank, action text, start, end, memory); streams follow the action kind."""
    layout = linear_layout(ranks)
    header = ScheduleHeader(
        name="hand",
        ranks=ranks,
        microbatches=1,
        steps=steps,
        chunks=1,
        versioning=versioning,
        stages_per_pipeline=ranks,
        pipelines=1,
        placement=layout.placement,
    )
    events = []
    for rank, text, start, end, memory in sorted(rows, key=lambda row: (row[2], row[0])):
        action = parse_action(text)
        events.append(
            Event(rank=rank, action=action, start=start, end=end, stream=stream_of(action), memory=memory)
        )
    return Trace(source="measured", schedule=header, events=tuple(events), meta=meta or {})


# Two ranks, one microbatch, two steps, on a clock that starts at 100 s; durations are arbitrary.
MEASURED = [
    (0, "0F0@v0", 100.0, 101.0, 10),
    (0, "0SEND_F0", 101.0, 101.5, 14),
    (0, "0RECV_B0", 101.0, 103.0, 18),
    (0, "0B0@v0", 103.0, 105.0, 20),
    (0, "0OPT@v1", 105.0, 105.5, 8),
    (0, "0F0@s1v1", 105.5, 106.5, 10),
    (0, "0SEND_F0@s1", 106.5, 107.0, 14),
    (0, "0RECV_B0@s1", 106.5, 108.5, 18),
    (0, "0B0@s1v1", 108.5, 110.5, 20),
    (0, "0OPT@s1v2", 110.5, 111.0, 8),
    (1, "1RECV_F0", 100.0, 101.5, 12),
    (1, "1F0@v0", 101.5, 102.0, 15),
    (1, "1B0@v0", 102.0, 102.8, 25),
    (1, "1SEND_B0", 102.8, 103.0, 27),
    (1, "1OPT@v1", 102.8, 103.2, 9),
    (1, "1RECV_F0@s1", 103.2, 107.0, 12),
    (1, "1F0@s1v1", 107.0, 107.5, 15),
    (1, "1B0@s1v1", 107.5, 108.3, 25),
    (1, "1SEND_B0@s1", 108.3, 108.5, 27),
    (1, "1OPT@s1v2", 108.3, 108.7, 9),
]


def test_times_come_from_the_events() -> None:
    workload = {"workload": {"microbatch_size": 4, "sequence_length": 16, "data_parallel": 2}}
    metrics = compute_metrics(trace_of(2, 2, Versioning.FLUSH, MEASURED, workload))
    # makespan 111 - 100; a step ends with its last F/B: step 0 at 105.0, step 1 at 110.5
    assert metrics.makespan == 11.0
    assert metrics.step_time == 5.5
    # compute (F, B, OPT): rank 0 1 + 2 + 0.5 + 1 + 2 + 0.5 = 7; rank 1 0.5 + 0.8 + 0.4 twice = 3.4
    assert metrics.utilization == pytest.approx([7 / 11, 3.4 / 11])
    assert metrics.bubble == pytest.approx([4 / 11, 7.6 / 11])
    assert metrics.bubble_fraction == pytest.approx(1 - (10.4 / 2) / (2 * 5.5))
    # 1 microbatch x 4 samples x 2 replicas per 5.5 s; 16 tokens each
    assert metrics.samples_per_s == pytest.approx(8 / 5.5)
    assert metrics.tokens_per_s == pytest.approx(128 / 5.5)
    assert metrics.peak_memory == [20, 27]
    assert (metrics.weight_versions, metrics.delay, metrics.mismatches) == ([1, 1], [0, 0], [0, 0])


def test_arguments_override_the_workload_in_meta() -> None:
    metrics = compute_metrics(
        trace_of(2, 2, Versioning.FLUSH, MEASURED), microbatch_size=3, sequence_length=10
    )
    assert metrics.samples_per_s == pytest.approx(3 / 5.5) and metrics.tokens_per_s == pytest.approx(30 / 5.5)


def test_memory_series_is_time_ordered_and_samples_sends_when_posted() -> None:
    series = memory_series(trace_of(2, 2, Versioning.FLUSH, MEASURED))
    assert series[0][:4] == [(101.0, 10), (101.0, 14), (103.0, 18), (105.0, 20)]
    assert [time for time, _ in series[1]] == sorted(time for time, _ in series[1])


def test_staleness_comes_from_the_versions_in_the_trace() -> None:
    # One rank, stashing: microbatch 1's backward reads v0 after the update to v1 -> the update to v2
    # applies a gradient from v0 (delay 2 - 1 - 0 = 1) and v0 and v1 are held together (2 versions).
    stashed = [
        (0, "0F0@v0", 0, 1, None),
        (0, "0F1@v0", 1, 2, None),
        (0, "0B0@v0", 2, 4, None),
        (0, "0OPT0@v1", 4, 4, None),
        (0, "0B1@v0", 4, 6, None),
        (0, "0OPT1@v2", 6, 6, None),
    ]
    metrics = compute_metrics(trace_of(1, 1, Versioning.STASH, stashed))
    assert (metrics.delay, metrics.weight_versions, metrics.mismatches) == ([1], [2], [0])
    # Without stashing the backward reads the new weights: a mismatch, no delay, one version.
    current = [row if row[1] != "0B1@v0" else (0, "0B1@v1", 4, 6, None) for row in stashed]
    metrics = compute_metrics(trace_of(1, 1, Versioning.FLUSH, current))
    assert (metrics.delay, metrics.weight_versions, metrics.mismatches) == ([0], [1], [1])
    assert metrics.peak_memory == [None]


def test_executed_order_is_the_traces_not_the_plans() -> None:
    # A measured rank that ran its forwards in the opposite order: the counting sees that order.
    rows = [
        (0, "0F1@v0", 0, 1, None),
        (0, "0F0@v0", 1, 2, None),
        (0, "0B0@v0", 2, 4, None),
        (0, "0B1@v0", 4, 6, None),
    ]
    order = executed_schedule(trace_of(1, 1, Versioning.FLUSH, rows)).actions[0]
    assert [str(action) for action in order] == ["0F1@v0", "0F0@v0", "0B0@v0", "0B1@v0"]


def test_a_simulated_trace_read_back_gives_the_same_metrics(tmp_path: Path) -> None:
    simulation = simulate(
        build("zb-h1", 3, 6, 2), CostModel.uniform(latency=0.1, stash_bytes=5, activation_bytes=1)
    )
    path = tmp_path / "trace.json"
    write_trace(path, simulation.trace())
    assert compute_metrics(read_trace(path)) == simulation.metrics()

"""Small cases with communication, worked by hand, to the microsecond.

.venv/bin/pytest tests/simulator/test_hand_worked.py -q

Times in the comments are milliseconds. A transfer holds its directed link for latency + bytes /
bandwidth; a receive ends when its message has arrived; with overlap a send costs its rank nothing.
"""

from __future__ import annotations

import pytest

from schedules import build
from schedules.ir import Kind
from simulator import CostModel, simulate
from simulator.links import ring_allreduce_time

MS = 1e-3


def spans_us(schedule, timeline, rank: int) -> dict[str, tuple[int, int]]:
    """{action text: (start, end)} of one rank, in whole microseconds."""
    return {
        str(action).split("@")[0]: (round(start * 1e6), round(end * 1e6))
        for action, start, end in zip(
            schedule.actions[rank], timeline.starts[rank], timeline.ends[rank], strict=True
        )
    }


def test_gpipe_two_ranks_with_overlapped_sends() -> None:
    # t_F = 1, t_B = 2; transfer = 0.1 latency + 100 kB / (1 GB/s) = 0.1 + 0.1 = 0.2.
    # rank 0: F0 [0,1], SEND_F0 [1,1.2], F1 [1,2], SEND_F1 [2,2.2]
    # rank 1: RECV_F0 [0,1.2], F0 [1.2,2.2], RECV_F1 [2.2,2.2] (arrived at 2.2), F1 [2.2,3.2],
    #         B0 [3.2,5.2], SEND_B0 [5.2,5.4], B1 [5.2,7.2], SEND_B1 [7.2,7.4], OPT [7.2,7.2]
    # rank 0: RECV_B0 [2,5.4], B0 [5.4,7.4], RECV_B1 [7.4,7.4], B1 [7.4,9.4], OPT [9.4,9.4] -> 9.4
    schedule = build("gpipe", 2, 2)
    costs = CostModel.uniform(
        forward=MS, backward=2 * MS, latency=0.1 * MS, bandwidth=1e9, activation_bytes=100_000
    )
    timeline = simulate(schedule, costs).timeline
    rank0, rank1 = spans_us(schedule, timeline, 0), spans_us(schedule, timeline, 1)
    assert rank0["0SEND_F0"] == (1000, 1200) and rank0["0F1"] == (1000, 2000)
    assert rank1["1RECV_F0"] == (0, 1200) and rank1["1F0"] == (1200, 2200)
    assert rank1["1RECV_F1"] == (2200, 2200) and rank1["1SEND_B1"] == (7200, 7400)
    assert rank0["0RECV_B0"] == (2000, 5400) and rank0["0B0"] == (5400, 7400)
    assert rank0["0B1"] == (7400, 9400)
    assert round(timeline.makespan * 1e6) == 9400


def test_gpipe_two_ranks_with_blocking_sends() -> None:
    # Same costs, sends block: rank 0: F0 [0,1], SEND_F0 [1,1.2], F1 [1.2,2.2], SEND_F1 [2.2,2.4]
    # rank 1: RECV_F0 [0,1.2], F0 [1.2,2.2], RECV_F1 [2.2,2.4], F1 [2.4,3.4], B0 [3.4,5.4],
    #         SEND_B0 [5.4,5.6], B1 [5.6,7.6], SEND_B1 [7.6,7.8]
    # rank 0: RECV_B0 [2.4,5.6], B0 [5.6,7.6], RECV_B1 [7.6,7.8], B1 [7.8,9.8] -> 9.8
    schedule = build("gpipe", 2, 2)
    costs = CostModel.uniform(
        forward=MS, backward=2 * MS, latency=0.1 * MS, bandwidth=1e9, activation_bytes=100_000, overlap=False
    )
    timeline = simulate(schedule, costs).timeline
    rank0, rank1 = spans_us(schedule, timeline, 0), spans_us(schedule, timeline, 1)
    assert rank0["0F1"] == (1200, 2200) and rank0["0SEND_F1"] == (2200, 2400)
    assert rank1["1RECV_F1"] == (2200, 2400) and rank1["1B1"] == (5600, 7600)
    assert rank0["0RECV_B1"] == (7600, 7800) and rank0["0B1"] == (7800, 9800)
    assert round(timeline.makespan * 1e6) == 9800


def test_gpipe_two_ranks_link_contention() -> None:
    # Transfer 1.5 (0.5 latency + 1 MB at 1 GB/s) against t_F = 1: the link 0->1 queues.
    # rank 0: SEND_F0 [1,2.5], SEND_F1 waits for the link [2.5,4], SEND_F2 [4,5.5]
    # rank 1: F0 [2.5,3.5], RECV_F1 [3.5,4], F1 [4,5], RECV_F2 [5,5.5], F2 [5.5,6.5], B0 [6.5,8.5],
    #         SEND_B0 [8.5,10], B1 [8.5,10.5], SEND_B1 [10.5,12], B2 [10.5,12.5], SEND_B2 [12.5,14]
    # rank 0: B0 [10,12], B1 [12,14], B2 [14,16] -> 16
    schedule = build("gpipe", 2, 3)
    costs = CostModel.uniform(
        forward=MS, backward=2 * MS, latency=0.5 * MS, bandwidth=1e9, activation_bytes=10**6
    )
    timeline = simulate(schedule, costs).timeline
    rank0, rank1 = spans_us(schedule, timeline, 0), spans_us(schedule, timeline, 1)
    assert [rank0[f"0SEND_F{j}"] for j in range(3)] == [(1000, 2500), (2500, 4000), (4000, 5500)]
    assert [rank1[f"1F{j}"] for j in range(3)] == [(2500, 3500), (4000, 5000), (5500, 6500)]
    assert rank1["1SEND_B1"] == (10500, 12000)
    assert [rank0[f"0B{j}"] for j in range(3)] == [(10000, 12000), (12000, 14000), (14000, 16000)]
    assert round(timeline.makespan * 1e6) == 16000


def test_1f1b_three_ranks_with_latency() -> None:
    # Transfer 0.25 (latency only). Orders: rank 0 F0 F1 F2 B0 B1 B2; rank 1 F0 F1 B0 F2 B1 B2;
    # rank 2 F0 B0 F1 B1 F2 B2 (each with its sends and receives).
    # rank 0: F0 [0,1], F1 [1,2], F2 [2,3]
    # rank 1: F0 [1.25,2.25], F1 [2.25,3.25]
    # rank 2: F0 [2.5,3.5], B0 [3.5,5.5] (sent at 5.75), F1 [5.5,6.5], B1 [6.5,8.5] (8.75), waits for F2
    # rank 1: B0 [5.75,7.75] (sent 8.0), F2 [7.75,8.75] (sent 9.0), B1 [8.75,10.75] (11.0), waits for B2
    # rank 2: F2 [9,10], B2 [10,12] (sent 12.25)
    # rank 1: B2 [12.25,14.25] (sent 14.5)
    # rank 0: B0 [8,10], B1 [11,13], B2 [14.5,16.5] -> 16.5 = 15 + 6 transfers on the critical path
    schedule = build("1f1b", 3, 3)
    costs = CostModel.uniform(forward=MS, backward=2 * MS, latency=0.25 * MS)
    timeline = simulate(schedule, costs).timeline
    rank0, rank1, rank2 = (spans_us(schedule, timeline, rank) for rank in range(3))
    assert [rank0[f"0F{j}"] for j in range(3)] == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert [rank1["1F0"], rank1["1F1"], rank1["1B0"], rank1["1F2"]] == [
        (1250, 2250),
        (2250, 3250),
        (5750, 7750),
        (7750, 8750),
    ]
    assert [rank2["2F0"], rank2["2B0"], rank2["2F1"], rank2["2B1"]] == [
        (2500, 3500),
        (3500, 5500),
        (5500, 6500),
        (6500, 8500),
    ]
    assert rank2["2RECV_F2"] == (8500, 9000) and rank2["2B2"] == (10000, 12000)
    assert rank1["1B1"] == (8750, 10750) and rank1["1B2"] == (12250, 14250)
    assert [rank0[f"0B{j}"] for j in range(3)] == [(8000, 10000), (11000, 13000), (14500, 16500)]
    assert round(timeline.makespan * 1e6) == 16500


def test_data_parallel_all_reduce_lengthens_every_update() -> None:
    # 4 replicas, 1 GB of weights per stage, 50 GB/s, 10 us per hop:
    # 2*3/4 * 1e9 / 50e9 = 30 ms, plus 6 hops * 10 us = 60 us -> 30.06 ms on top of the 0.5 ms step.
    assert ring_allreduce_time(10**9, 4, 10e-6, 50e9) == pytest.approx(30.06 * MS)
    schedule = build("1f1b", 2, 2)
    costs = CostModel.uniform(
        optimizer_step=0.5 * MS, weight_bytes=10**9, data_parallel=4, dp_latency=10e-6, dp_bandwidth=50e9
    )
    simulation = simulate(schedule, costs)
    opt = next(i for i, action in enumerate(schedule.actions[0]) if action.kind is Kind.OPT)
    duration = simulation.timeline.ends[0][opt] - simulation.timeline.starts[0][opt]
    assert round(duration * 1e6) == 30560
    assert simulation.metrics().samples_per_s == pytest.approx(2 * 4 / simulation.metrics().step_time)


def test_amdp_gradient_and_weight_messages_cost_the_stage_weights() -> None:
    # SEND_G / SEND_W carry a stage's weights: 2 MB at 1 GB/s + 0.1 ms latency = 2.1 ms on the link.
    schedule = build("amdp", 4, 4, steps=2)
    costs = CostModel.uniform(latency=0.1 * MS, bandwidth=1e9, weight_bytes=2 * 10**6, activation_bytes=0)
    trace = simulate(schedule, costs).trace()
    replica_messages = [e for e in trace.events if e.action.kind in (Kind.SEND_G, Kind.SEND_W)]
    assert replica_messages and all(e.bytes == 2 * 10**6 for e in replica_messages)
    assert {round(e.duration * 1e6) for e in replica_messages} == {2100}

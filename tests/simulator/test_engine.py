"""The fast engine equals the textbook SimPy model, is deterministic, and names deadlocks.

.venv/bin/pytest tests/simulator/test_engine.py -q

simulator/reference.py yields a Timeout per action and models each link as a simpy.Resource; the engine
runs ahead on local clocks. With communication, contention, jitter, stragglers and both send modes they
must agree to the bit, on every registered schedule.
"""

from __future__ import annotations

import importlib.util

import pytest

from schedules import SCHEDULES, build
from schedules.ir import Schedule, linear_layout, parse_action
from simulator import CostModel, simulate
from simulator.engine import run_plan
from simulator.plan import SimulationError, make_plan
from simulator.reference import run_reference
from traces.io import dumps_trace

BUSY_LINKS = dict(
    latency=0.3,
    bandwidth=10.0,
    activation_bytes=7,
    weight_bytes=20,
    jitter="lognormal",
    jitter_sigma=0.3,
    seed=3,
    stragglers=((1, 1.5),),
)
"""Transfers of 1 s (activations) and 2.3 s (AMDP weights) against t_F = 1 s: links queue."""


def sizes(name: str) -> tuple[int, int, int]:
    info = SCHEDULES[name]
    if importlib.util.find_spec(f"schedules.{info.module}") is None:
        pytest.skip(f"schedules/{info.module}.py does not exist yet")
    return (4, 8, 3 if info.asynchronous else 2)


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "blocking"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_engine_equals_the_event_per_action_reference(name: str, overlap: bool) -> None:
    plan = make_plan(build(name, *sizes(name)), CostModel.uniform(overlap=overlap, **BUSY_LINKS))
    fast, reference = run_plan(plan), run_reference(plan)
    assert fast.starts == reference.starts
    assert fast.ends == reference.ends
    assert fast.makespan == reference.makespan


def test_links_queue_and_overlap_hides_transfers() -> None:
    schedule = build("gpipe", 2, 4)
    queued = simulate(schedule, CostModel.uniform(latency=1.5)).timeline
    # rank 0's sends are posted every second but take 1.5 s each: each starts when the previous ends
    sends = [i for i, action in enumerate(schedule.actions[0]) if action.kind.value == "SEND_F"]
    assert [queued.starts[0][i] for i in sends] == [1.0, 2.5, 4.0, 5.5]
    blocking = simulate(schedule, CostModel.uniform(latency=1.5, overlap=False)).timeline
    assert blocking.makespan > queued.makespan


def test_same_inputs_same_trace_bytes_and_the_seed_matters() -> None:
    schedule = build("1f1b", 4, 8, 2)
    costs = CostModel.uniform(jitter="normal", jitter_sigma=0.1, seed=7, latency=0.01, activation_bytes=100)
    first = dumps_trace(simulate(schedule, costs).trace())
    assert first == dumps_trace(simulate(schedule, costs).trace())
    other = CostModel.uniform(jitter="normal", jitter_sigma=0.1, seed=8, latency=0.01, activation_bytes=100)
    assert first != dumps_trace(simulate(schedule, other).trace())


def test_jitter_has_mean_one_and_stragglers_slow_their_rank() -> None:
    schedule = build("gpipe", 2, 400)
    for jitter in ("normal", "lognormal", "uniform"):
        plan = make_plan(schedule, CostModel.uniform(jitter=jitter, jitter_sigma=0.2, seed=1))
        forwards = [
            d for d, a in zip(plan.durations[0], schedule.actions[0], strict=True) if a.kind.value == "F"
        ]
        assert sum(forwards) / len(forwards) == pytest.approx(1.0, abs=0.05), jitter
        assert len(set(forwards)) > 300, jitter
    slow = make_plan(schedule, CostModel.uniform(stragglers=((1, 2.0),)))
    assert (slow.durations[0][0], slow.durations[1][1]) == (1.0, 2.0)  # 0F0 on rank 0, 1F0 on rank 1


def custom(rank0: str, rank1: str) -> Schedule:
    return Schedule(
        name="custom",
        layout=linear_layout(2),
        microbatches=1,
        actions=(tuple(map(parse_action, rank0.split())), tuple(map(parse_action, rank1.split()))),
    )


def test_a_deadlock_names_the_stuck_ranks_and_actions() -> None:
    # rank 0 waits for the gradient before sending its activation; rank 1 waits for that activation
    schedule = custom("0RECV_B0 0F0 0SEND_F0 0B0", "1RECV_F0 1F0 1B0 1SEND_B0")
    with pytest.raises(SimulationError, match=r"deadlock: rank 0 at 0RECV_B0, rank 1 at 1RECV_F0"):
        simulate(schedule)


def test_a_receive_without_a_send_is_named() -> None:
    with pytest.raises(SimulationError, match=r"rank 1: 1RECV_F0 has no matching send"):
        simulate(custom("0F0 0B0", "1RECV_F0 1F0 1B0"))

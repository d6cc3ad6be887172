"""What a calibrated cost model adds to the simulator: host time before actions, warm-up of the first
step, empirical jitter on compute and on the wire, and a cost file that carries them all.

.venv/bin/pytest tests/simulator/test_measured_costs.py -q
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from schedules import SCHEDULES, build
from simulator import CostModel, StageCost, simulate
from simulator.costfile import dumps_costs, loads_costs, with_overrides
from simulator.engine import run_plan
from simulator.plan import make_plan
from simulator.reference import run_reference
from simulator.units import CostError

HOST = dict(host_forward=0.1, host_backward=0.2, host_optimizer_step=0.3, host_send=0.05, host_recv=0.15)
WARMUP = dict(warmup_forward=2.0, warmup_backward=1.0, warmup_optimizer_step=0.5)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_engine_equals_reference_with_host_times_warmup_and_jitter(name: str) -> None:
    costs = CostModel.uniform(
        latency=0.3,
        activation_bytes=7,
        weight_bytes=20,
        bandwidth=10.0,
        jitter="empirical",
        jitter_factors=(0.5, 1.0, 1.5, 3.0),
        link_jitter=(0.1, 1.0, 9.0),
        **HOST,
        **WARMUP,
    )
    plan = make_plan(build(name, 4, 8, steps=2), costs)
    fast, reference = run_plan(plan), run_reference(plan)
    assert fast.starts == reference.starts and fast.ends == reference.ends


def test_host_time_keeps_the_rank_busy_before_each_action() -> None:
    # GPipe, P = 1, m = 2: F0 F1 B0 B1 OPT, each after its host time; no communication at all.
    costs = CostModel.uniform(forward=1.0, backward=2.0, optimizer_step=0.5, **HOST)
    timeline = simulate(build("gpipe", 1, 2), costs).timeline
    assert timeline.starts[0] == pytest.approx([0.1, 1.2, 2.4, 4.6, 6.9])
    assert timeline.ends[0][-1] == pytest.approx(7.4)


def test_host_time_is_idle_for_the_device() -> None:
    costs = CostModel.uniform(forward=1.0, backward=2.0, host_forward=1.0, host_backward=2.0)
    metrics = simulate(build("gpipe", 1, 4), costs).metrics()
    # 12 s of compute, 12 s of host time; the makespan runs from the first start (after 1 s of host)
    assert metrics.utilization == [pytest.approx(12 / 23)]


def test_a_send_starts_its_transfer_when_its_posting_ends() -> None:
    costs = CostModel.uniform(forward=1.0, backward=2.0, latency=0.5, host_send=0.25)
    schedule = build("gpipe", 2, 1)
    simulation = simulate(schedule, costs)
    send = next(i for i, a in enumerate(schedule.actions[0]) if a.kind.value == "SEND_F")
    assert simulation.timeline.starts[0][send] == pytest.approx(1.25)
    assert simulation.timeline.ends[0][send] == pytest.approx(1.75)


def test_warmup_lands_on_the_first_action_of_each_kind_of_each_stage() -> None:
    base = CostModel.uniform(forward=1.0, backward=2.0, optimizer_step=0.5)
    plain = make_plan(build("1f1b", 2, 4, steps=2), base)
    warm = make_plan(build("1f1b", 2, 4, steps=2), replace(base, stages=(replace(base.stages[0], **WARMUP),)))
    for rank, actions in enumerate(plain.schedule.actions):
        extra = [w - p for w, p in zip(warm.durations[rank], plain.durations[rank], strict=True)]
        added = {str(a): x for a, x in zip(actions, extra, strict=True) if x}
        assert added == {f"{rank}F0@v0": 2.0, f"{rank}B0@v0": 1.0, f"{rank}OPT@v1": 0.5}


def test_interleaved_warmup_and_compute_divide_by_chunks() -> None:
    costs = CostModel.uniform(forward=2.0, backward=4.0, warmup_forward=1.0)
    plan = make_plan(build("interleaved", 2, 4, chunks=2), costs)
    forwards = [
        (a.stage, d)
        for a, d in zip(plan.schedule.actions[0], plan.durations[0], strict=True)
        if a.kind.value == "F"
    ]
    firsts = {stage: next(d for s, d in forwards if s == stage) for stage in (0, 2)}
    assert firsts == {0: 1.5, 2: 1.5}  # each virtual stage: 2 / 2 + its share of the warm-up, 1 / 2
    assert sorted(d for _, d in forwards)[:-2] == [1.0] * (len(forwards) - 2)


def test_empirical_jitter_deals_a_deck_so_means_hold() -> None:
    factors = (0.5, 1.0, 1.5, 2.0, 5.0)
    costs = CostModel.uniform(forward=1.0, backward=2.0, jitter="empirical", jitter_factors=factors, seed=7)
    plan = make_plan(build("gpipe", 1, 10), costs)
    forwards = [
        d for a, d in zip(plan.schedule.actions[0], plan.durations[0], strict=True) if a.kind.value == "F"
    ]
    assert sorted(forwards[:5]) == list(factors) and sorted(forwards[5:]) == list(factors)
    again = make_plan(build("gpipe", 1, 10), costs)
    assert again.durations == plan.durations  # seeded: same inputs, same draws


def test_link_jitter_changes_transfers_not_compute() -> None:
    base = CostModel.uniform(forward=1.0, backward=2.0, latency=1.0)
    jittered = replace(base, link_jitter=(0.5, 1.5))
    plain, wire = make_plan(build("gpipe", 2, 4), base), make_plan(build("gpipe", 2, 4), jittered)
    for rank, actions in enumerate(plain.schedule.actions):
        for action, p, w in zip(actions, plain.durations[rank], wire.durations[rank], strict=True):
            if action.kind.value.startswith("SEND"):
                assert w in (0.5, 1.5)
            else:
                assert w == p


def test_the_cost_file_carries_host_warmup_and_jitter_exactly() -> None:
    stages = (StageCost(forward=1e-3, **HOST), StageCost(forward=2e-3, backward=3e-3, **WARMUP))
    costs = CostModel(stages=stages, jitter="empirical", jitter_factors=(0.9, 1.1), link_jitter=(0.2, 1.8))
    assert loads_costs(dumps_costs(costs), source="x") == costs
    assert "host_recv = 0.15" in dumps_costs(costs)
    assert "host_forward" not in dumps_costs(CostModel.uniform())  # zero host times are not written


def test_a_flag_distribution_replaces_a_calibrated_one() -> None:
    costs = CostModel.uniform(jitter="empirical", jitter_factors=(0.9, 1.1))
    flagged = with_overrides(costs, jitter="normal", jitter_sigma="0.1")
    assert flagged.jitter == "normal" and flagged.jitter_factors == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(jitter="empirical"), "an empirical distribution needs its factors"),
        (dict(jitter="normal", jitter_sigma=0.1, jitter_factors=(1.0,)), "only it takes them"),
        (dict(link_jitter=(1.0, math.inf)), "link_jitter: factors must be finite"),
        (dict(host_send=-1.0), "host_send: must be a finite time"),
    ],
)
def test_bad_measured_fields_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(CostError, match=message):
        CostModel.uniform(**change)

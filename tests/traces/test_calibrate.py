"""Calibration recovers the costs that made a trace: compute, host times, link, warm-up, spread, memory.

The oracle: simulate a schedule with known costs, calibrate the simulated trace, and get those costs
back; the calibrated re-prediction then reproduces the trace's metrics.

.venv/bin/pytest tests/traces/test_calibrate.py -q
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from schedules import build
from schedules.ir import RECV_KINDS, SEND_KINDS
from schedules.semantics import message
from simulator import CostModel, StageCost, simulate
from simulator.calibration import calibrated_costs, calibration_toml
from simulator.costfile import loads_costs
from traces.calibrate import MIN_UNPACKS, calibrate, factors, quantiles, robust_mean
from traces.compare import compare_traces
from traces.pauses import checkpoint_steps, paused_steps, validation_steps
from traces.schema import Trace, TraceError

MS, US = 1e-3, 1e-6


def stage(forward: float, backward: float, weights: int, stash: int) -> StageCost:
    return StageCost(
        forward=forward * MS,
        backward=backward * MS,
        optimizer_step=0.5 * MS,
        activation_bytes=1000,
        weight_bytes=weights,
        stash_bytes=stash,
        host_forward=10 * US,
        host_backward=20 * US,
        host_optimizer_step=30 * US,
        host_send=40 * US,
        host_recv=50 * US,
        warmup_forward=3 * MS,
        warmup_backward=1 * MS,
        warmup_optimizer_step=2 * MS,
    )


KNOWN = CostModel(
    stages=(stage(1.0, 2.0, 40_000, 9_000), stage(1.5, 3.0, 50_000, 8_000), stage(2.0, 4.0, 60_000, 7_000)),
    latency=100 * US,
    optimizer="adamw",
)


@pytest.fixture(scope="module")
def measured() -> Trace:
    return simulate(build("1f1b", 3, 6, steps=4), KNOWN).trace()


def test_calibration_recovers_every_time_of_a_simulated_run(measured: Trace) -> None:
    fit = calibrate(measured)
    assert fit.steps_used == (1, 2, 3) and fit.entries == 3
    for entry, known in enumerate(KNOWN.stages):
        times = {name: estimate.seconds for name, estimate in fit.stages[entry].times.items()}
        for name in ("forward", "backward", "optimizer_step", "host_forward", "host_backward"):
            assert times[name] == pytest.approx(getattr(known, name), rel=1e-9), (entry, name)
        for name in ("host_optimizer_step", "host_send", "warmup_forward", "warmup_backward"):
            assert times[name] == pytest.approx(getattr(known, name), rel=1e-9), (entry, name)
        if "host_recv" in times:  # seen only where a message was already there when the rank came to it
            assert times["host_recv"] == pytest.approx(known.host_recv, rel=1e-9)
    assert any("host_recv" in stage.times for stage in fit.stages)
    assert fit.link.latency.seconds == pytest.approx(KNOWN.latency, rel=1e-9)
    assert math.isinf(fit.link.bandwidth) and "one message size (1000 B)" in fit.link.note
    assert fit.compute_factors == pytest.approx([1.0] * 32)  # no jitter in, no spread out


def test_the_calibrated_prediction_reproduces_the_run(measured: Trace) -> None:
    fit = calibrate(measured)
    costs = calibrated_costs(fit, measured)
    assert costs.jitter == "none" and costs.link_jitter == ()  # nothing to spread
    for entry, known in enumerate(KNOWN.stages):
        assert costs.stages[entry].weight_bytes == known.weight_bytes  # least squares on the memory
        assert costs.stages[entry].stash_bytes == known.stash_bytes
    text = calibration_toml(fit, costs, source="test")
    reloaded = loads_costs(text, source="calibrated.toml")  # the file as written: times with units
    predicted = simulate(build("1f1b", 3, 6, steps=4), reloaded).trace()
    comparison = compare_traces(measured, predicted)
    assert comparison.scalar("step_time").rel_error == pytest.approx(0, abs=1e-5)
    assert comparison.worst_utilization_error() < 1e-5 and comparison.order.equal
    assert [p.rel_error for p in comparison.per_index("peak_memory")] == [0, 0, 0]
    assert "host_send = " in text and "# mean of" in text and "steps used: 1..3" in text


def test_a_split_backward_gives_b_as_i_plus_w() -> None:
    known = CostModel.uniform(forward=1 * MS, backward=3 * MS, backward_weight=1 * MS, latency=10 * US)
    fit = calibrate(simulate(build("zb-h1", 2, 4, steps=3), known).trace())
    times = {name: e.seconds for name, e in fit.stages[0].times.items()}
    assert times["backward"] == pytest.approx(3 * MS) and times["backward_weight"] == pytest.approx(1 * MS)
    assert "input_grad" not in times


def test_two_message_sizes_give_latency_and_bandwidth() -> None:
    # AMDP sends activations (1 kB) and weights (100 kB) to other ranks: the line through both sizes.
    known = CostModel.uniform(
        forward=1 * MS,
        backward=2 * MS,
        latency=50 * US,
        bandwidth=1e8,
        activation_bytes=1_000,
        weight_bytes=100_000,
    )
    fit = calibrate(simulate(build("amdp", 4, 8, steps=3), known).trace())
    assert fit.link.latency.seconds == pytest.approx(50 * US, rel=1e-6)
    assert fit.link.bandwidth == pytest.approx(1e8, rel=1e-6)
    assert fit.link.sizes == (1_000, 100_000) and "least squares over 2 message sizes" in fit.link.note


def test_spread_is_kept_as_factors_and_drawn_back() -> None:
    jittered = replace(KNOWN, jitter="lognormal", jitter_sigma=0.3, seed=5)
    trace = simulate(build("1f1b", 3, 6, steps=6), jittered).trace()
    fit = calibrate(trace)
    assert len(fit.compute_factors) == 32 and fit.compute_factors != tuple(sorted(fit.compute_factors))[::-1]
    assert sum(fit.compute_factors) / 32 == pytest.approx(1.0)
    assert fit.compute_factors[0] < 0.8 < 1.25 < fit.compute_factors[-1]  # lognormal sigma 0.3
    costs = calibrated_costs(fit, trace)
    assert costs.jitter == "empirical" and len(costs.jitter_factors) == 32


def _paused(measured: Trace, config: dict | None) -> Trace:
    """`measured` with everything from rank 0's first action of step 2 on 50 ms later (a pause after step
    1), the run's config in its meta (or none)."""
    events = list(measured.events)
    cut = next(i for i, e in enumerate(events) if e.rank == 0 and e.action.step == 2)
    later = [
        replace(e, start=e.start + 0.05, end=e.end + 0.05) if i >= cut else e for i, e in enumerate(events)
    ]
    meta = {"config": config} if config is not None else {}
    return replace(measured, events=tuple(sorted(later, key=lambda e: (e.start, e.rank))), meta=meta)


def test_the_steps_with_work_outside_the_schedule() -> None:
    assert validation_steps(12, 10) == {9, 11} and validation_steps(12, 0) == frozenset()
    assert checkpoint_steps(12, 4) == {3, 7} and checkpoint_steps(12, 6) == {5}  # never after the last
    header = simulate(build("1f1b", 3, 3, steps=12), KNOWN).trace()
    paused = replace(header, meta={"config": {"val_every": 10, "checkpoint_every": 4}})
    assert paused_steps(paused) == {3, 4, 7, 8, 9, 10, 11} and paused_steps(header) is None


def test_a_pause_for_a_checkpoint_is_left_out_of_host_times(measured: Trace) -> None:
    fit = calibrate(_paused(measured, {"checkpoint_every": 2, "val_every": 0}))  # saved after step 1
    assert fit.stages[0].times["host_forward"].seconds == pytest.approx(10 * US, rel=1e-6)
    assert fit.stages[0].times["host_forward"].kept == 6  # step 3's six forwards (steps 1 and 2 paused)
    assert any("host times from 1 of 3 steps" in note for note in fit.notes)


def test_a_pause_the_run_does_not_explain_is_part_of_its_cost(measured: Trace) -> None:
    # The garbage collector or another process: it slows the real run too, so the fit keeps it.
    fit = calibrate(_paused(measured, {"checkpoint_every": 0, "val_every": 0}))
    host = fit.stages[0].times["host_forward"]
    assert host.dropped == 0 and host.seconds == pytest.approx(10 * US + 0.05 / host.kept, rel=1e-6)
    assert calibrate(_paused(measured, None)).stages[0].times["host_forward"] == host


def test_when_every_step_pauses_long_pauses_are_dropped_as_outliers(measured: Trace) -> None:
    fit = calibrate(_paused(measured, {"checkpoint_every": 0, "val_every": 1}))
    assert fit.stages[0].times["host_forward"].seconds == pytest.approx(10 * US, rel=1e-6)
    assert any("long pauses between actions dropped" in note for note in fit.notes)


def test_a_single_process_runs_gaps_are_not_host_time(measured: Trace) -> None:
    # Its ranks took turns on one device: a rank's gaps hold the other ranks' actions.
    fit = calibrate(replace(measured, meta={"backend": "local"}))
    for stage_fit in fit.stages:
        assert not [name for name in stage_fit.times if name.startswith("host_")]
        assert stage_fit.times["forward"].seconds == pytest.approx(KNOWN.stages[stage_fit.entry].forward)
    assert any("single-process run" in note for note in fit.notes)


def test_robust_statistics() -> None:
    assert robust_mean([]) is None
    estimate = robust_mean([1.0, 1.1, 0.9, 1.0, 50.0])
    assert estimate.seconds == pytest.approx(1.0) and estimate.dropped == 1 and estimate.kept == 4
    assert robust_mean([1.0, 1.1, 0.9, 1.0, 50.0], trim=False).seconds == pytest.approx(10.8)
    assert quantiles([3.0, 1.0, 2.0], count=3) == pytest.approx((1 + 1 / 3, 2.0, 3 - 1 / 3))
    assert sum(factors([0.5, 1.0, 4.0], count=8)) == pytest.approx(8.0)


def test_an_empty_trace_cannot_be_calibrated(measured: Trace) -> None:
    with pytest.raises(TraceError, match="no events"):
        calibrate(replace(measured, events=()))


def test_a_run_whose_ranks_shared_the_cpus_says_so(measured: Trace) -> None:
    def notes(meta: dict) -> list[str]:
        return [
            note
            for note in calibrate(replace(measured, meta={**measured.meta, **meta})).notes
            if "CPUs" in note
        ]

    ranks = measured.schedule.ranks
    assert notes({"cpus": ranks, "config": {"threads": 1}}) == []  # a CPU for every rank: nothing to say
    assert notes({}) == []  # a simulated or older trace: not known
    (note,) = notes({"cpus": 1, "config": {"threads": 1}})
    assert note.startswith(f"the run's {ranks} ranks x 1 thread(s) shared 1 CPUs: the fitted times include")
    (note,) = notes({"cpus": ranks, "config": {"threads": 2}})
    assert f"{ranks} ranks x 2 thread(s) shared {ranks} CPUs" in note
    assert notes({"cpus": ranks, "config": {"threads": 1}, "pinned": True}) == []
    (note,) = notes({"cpus": ranks, "config": {"threads": 1}, "pinned": False})  # --no-pin
    assert note.startswith(
        "the run's ranks were not pinned (pipesim run --no-pin): their threads shared the CPUs"
    )


def test_a_stage_whose_receives_all_waited_takes_everyones_unpacking(measured: Trace) -> None:
    # 1F1B's first stage waits for every gradient (no receive of its own finds its message there), so its
    # unpacking comes from all stages' receives that did; a stage with enough of its own keeps its own
    layout = measured.schedule.layout
    sends = {message(layout, e.action): e for e in measured.events if e.action.kind in SEND_KINDS}

    def arrived(event) -> bool:
        if event.action.kind not in RECV_KINDS:
            return False
        return event.start >= sends[message(layout, event.action)].start + KNOWN.latency - 1e-12

    slower = 1 * MS  # rank 1 unpacks 1 ms longer (into its next action: only that one's gap changes)
    events = [
        replace(e, end=e.end + slower) if e.rank == 1 and e.action.step >= 1 and arrived(e) else e
        for e in measured.events
    ]
    used = [e for e in measured.events if e.action.step >= 1]
    counts = [sum(arrived(e) for e in used if e.rank == rank) for rank in (0, 1, 2)]
    assert counts[0] == 0 and min(counts[1:]) >= MIN_UNPACKS  # (what the case is about)
    fit = calibrate(replace(measured, events=tuple(events)))
    host_recv = [stage.times["host_recv"].seconds for stage in fit.stages]
    assert host_recv[1] == pytest.approx(50 * US + slower)  # its own receives
    assert host_recv[2] == pytest.approx(50 * US)
    assert host_recv[0] == pytest.approx(50 * US + slower * counts[1] / (counts[1] + counts[2]))  # everyone's
    wanted = "stage(s) 0 (0): fewer than 8 receives found their message"
    assert any(note.startswith(wanted) for note in fit.notes)

"""Carrying a calibration to another P: exact when the run's costs follow the analytic model.

.venv/bin/pytest tests/simulator/test_rescale.py -q
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from schedules import build
from simulator import simulate
from simulator.analytic import cost_model
from simulator.calibration import calibrated_costs
from simulator.presets import device, model
from simulator.rescale import rescaled_costs
from simulator.units import CostError
from traces.calibrate import calibrate


def analytic(stages: int):
    return cost_model(model("tiny"), device("cpu"), stages=stages)


def test_a_run_that_follows_the_analytic_model_is_predicted_exactly_at_another_p() -> None:
    # "Measure" P = 2 with the analytic costs of the tiny model, calibrate, carry to P = 4: the result
    # must be what the analytic model says for P = 4 directly (compute scales with FLOPs, beta = 0).
    run = simulate(build("1f1b", 2, 8, steps=4), analytic(2)).trace()
    run = replace(run, meta={**run.meta, "config": {"model": "tiny", "microbatch_size": 8}})
    calibrated = calibrated_costs(calibrate(run), run)
    carried, notes = rescaled_costs(calibrated, run, stages=4)
    truth = analytic(4)
    for ours, theirs in zip(carried.stages, truth.stages, strict=True):
        assert ours.forward == pytest.approx(theirs.forward, rel=1e-9)
        assert ours.backward == pytest.approx(theirs.backward, rel=1e-9)
        assert ours.optimizer_step == pytest.approx(theirs.optimizer_step, rel=1e-9)
        assert ours.weight_bytes == pytest.approx(theirs.weight_bytes, rel=1e-6)
    predicted = simulate(build("2bw", 4, 8, steps=4), carried).metrics()
    assert predicted.step_time == pytest.approx(
        simulate(build("2bw", 4, 8, steps=4), truth).metrics().step_time, rel=1e-6
    )
    assert "carried to 4 stages" in notes[0]


def test_a_trace_that_does_not_name_its_model_cannot_be_carried() -> None:
    run = simulate(build("1f1b", 2, 4, steps=3), analytic(2)).trace()
    with pytest.raises(CostError, match="does not say which model its run trained"):
        rescaled_costs(calibrated_costs(calibrate(run), run), run, stages=4)

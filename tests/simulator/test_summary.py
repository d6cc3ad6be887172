"""Simulation.metrics(), read off the simulation's arrays, equals the metrics of its trace.

.venv/bin/pytest tests/simulator/test_summary.py -q

traces.metrics.compute_metrics stays the reference (it is what a measured trace gets); the simulator skips
building the trace when only the metrics are asked for. Both must agree on every field, on every schedule,
under every cost model of the trace-identity test, and when a simulation's meta names another workload.
"""

from __future__ import annotations

import pytest

from schedules import SCHEDULES, build
from simulator import simulate
from tests.simulator.test_trace_identity import COSTS
from traces.metrics import compute_metrics


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_metrics_without_the_trace_equal_the_metrics_of_the_trace(name: str) -> None:
    for ranks, microbatches, steps in [(2, 4, 1), (4, 8, 3), (6, 12, 2)]:
        schedule = build(name, ranks, microbatches, steps=steps)
        for costs in COSTS.values():
            simulation = simulate(schedule, costs)
            assert simulation.metrics() == compute_metrics(simulation.trace())


def test_a_workload_in_the_meta_counts_as_in_the_trace() -> None:
    workload = {"microbatch_size": 4, "sequence_length": 128, "data_parallel": 2}
    simulation = simulate(build("1f1b", 4, 8), COSTS["sized"], meta={"workload": workload})
    metrics = simulation.metrics()
    assert metrics == compute_metrics(simulation.trace())
    assert metrics.tokens_per_s == pytest.approx(metrics.samples_per_s * 128)
    assert metrics.samples_per_s == pytest.approx(8 * 4 * 2 / metrics.step_time)

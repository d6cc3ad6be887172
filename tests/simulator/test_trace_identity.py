"""Simulated traces and metrics stay byte-identical: digests of every case against a golden file.

    .venv/bin/pytest tests/simulator/test_trace_identity.py -q
    .venv/bin/python tests/simulator/test_trace_identity.py --regenerate    # rewrite the golden file

The golden file, tests/simulator/golden/trace_digests.json, was generated from the main branch before
the simulator was sped up (issue 11); every speed-up since must leave every digest unchanged. A case is a
schedule at a size under one cost model: unit costs, sized messages and memory, jitter with stragglers
and blocking sends, host times with warm-up, empirical and link jitter. The trace digest covers the
schedule header and every event (the meta, which records the cost model's fields, is left out so that a
new cost field elsewhere does not move it); the metrics digest covers Simulation.metrics().to_dict().
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from schedules import SCHEDULES, build
from simulator import CostModel, simulate
from traces.io import dumps_trace

GOLDEN = Path(__file__).parent / "golden" / "trace_digests.json"

COSTS = {
    "unit": CostModel.uniform(),
    "sized": CostModel.uniform(
        forward=1e-3,
        backward=2.5e-3,
        optimizer_step=2e-4,
        latency=1e-4,
        bandwidth=4e9,
        activation_bytes=2**20,
        stash_bytes=3 * 2**20,
        weight_input_bytes=2**20,
        weight_bytes=2**24,
        data_parallel=2,
        dp_latency=1e-5,
        dp_bandwidth=1e10,
    ),
    "jitter-blocking": CostModel.uniform(
        latency=0.3,
        bandwidth=10.0,
        activation_bytes=7,
        weight_bytes=20,
        jitter="lognormal",
        jitter_sigma=0.3,
        seed=3,
        stragglers=((1, 1.5),),
        overlap=False,
    ),
    "host-warmup": CostModel.uniform(
        latency=0.05,
        activation_bytes=100,
        stash_bytes=50,
        host_forward=0.01,
        host_backward=0.02,
        host_optimizer_step=0.03,
        host_send=0.004,
        host_recv=0.005,
        warmup_forward=0.5,
        warmup_backward=0.7,
        warmup_optimizer_step=0.9,
        jitter="normal",
        jitter_sigma=0.1,
        seed=5,
    ),
    "empirical-link": CostModel.uniform(
        latency=0.2,
        bandwidth=50.0,
        activation_bytes=10,
        weight_bytes=40,
        jitter="empirical",
        jitter_factors=(0.8, 0.9, 1.0, 1.05, 1.25),
        link_jitter=(0.5, 1.0, 1.5, 3.0),
        seed=11,
    ),
}
"""Cost models that reach every branch of the plan and the engine (times in seconds)."""


def sizes(name: str) -> list[tuple[int, int, int]]:
    """(P, m, steps): a small and a medium size every schedule accepts, with steps that show a flush or
    the steady state."""
    info = SCHEDULES[name]
    more = 3 if info.asynchronous else 2
    return [(2, 4, 1), (4, 8, more), (6, 12, more)]


CASES = [
    (name, ranks, microbatches, steps, costs)
    for name in SCHEDULES
    for ranks, microbatches, steps in sizes(name)
    for costs in COSTS
]


def case_id(name: str, ranks: int, microbatches: int, steps: int, costs: str) -> str:
    return f"{name} P={ranks} m={microbatches} steps={steps} {costs}"


def digests(name: str, ranks: int, microbatches: int, steps: int, costs: str) -> dict[str, str]:
    simulation = simulate(build(name, ranks, microbatches, steps=steps), COSTS[costs])
    trace = replace(simulation.trace(), meta={})
    metrics = json.dumps(simulation.metrics().to_dict(), sort_keys=True)
    return {
        "trace": hashlib.sha256(dumps_trace(trace).encode()).hexdigest(),
        "metrics": hashlib.sha256(metrics.encode()).hexdigest(),
    }


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, str]]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_traces_and_metrics_are_unchanged(name: str, golden: dict[str, dict[str, str]]) -> None:
    cases = [case for case in CASES if case[0] == name]
    changed = [case_id(*case) for case in cases if digests(*case) != golden[case_id(*case)]]
    assert not changed, f"{len(changed)} of {len(cases)} cases differ from the golden file: {changed}"


def test_the_golden_file_covers_every_case(golden: dict[str, dict[str, str]]) -> None:
    assert sorted(golden) == sorted(case_id(*case) for case in CASES)


def main() -> None:
    parser = argparse.ArgumentParser(description="Rewrite the golden digests of simulated traces.")
    parser.add_argument("--regenerate", action="store_true", help="write tests/simulator/golden/")
    args = parser.parse_args()
    if not args.regenerate:
        parser.error("nothing to do without --regenerate")
    table = {case_id(*case): digests(*case) for case in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}: {len(table)} cases")


if __name__ == "__main__":
    main()

"""Simulate a lowered schedule under a cost model and get the shared trace (and from it, the metrics).

    from schedules import build
    from simulator import CostModel, simulate
    result = simulate(build("2bw", ranks=8, microbatches=32, steps=4), CostModel.uniform())
    result.trace()                    # traces.schema.Trace, source "simulated"
    result.metrics().to_dict()        # equal to traces.metrics.compute_metrics of that trace

Pipeline: make_plan (pre-resolve) -> run_plan (SimPy) -> memory_over_time -> Trace, built on first use;
the metrics alone come from the arrays (simulator/summary.py), without an object per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from schedules.fileio import paused_gc
from schedules.ir import Action, Kind, Schedule
from simulator.costs import CostModel
from simulator.engine import Timeline, run_plan
from simulator.memory import memory_over_time, memory_plan
from simulator.plan import Plan, make_plan
from simulator.summary import simulated_metrics
from traces.metrics import Metrics
from traces.schema import Event, ScheduleHeader, Trace, stream_of

SIMULATOR = "pipesim-simpy"


@dataclass(frozen=True)
class Simulation:
    """One simulated run: the plan, when every action ran, and what each rank held after it."""

    plan: Plan
    """The schedule and cost model, resolved (simulator/plan.py)."""
    timeline: Timeline
    """When every action ran (seconds)."""
    memory: list[list[int]]
    """memory[rank][i]: bytes held right after action i (simulator/memory.py)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra provenance for the trace's meta."""

    @property
    def schedule(self) -> Schedule:
        return self.plan.schedule

    @property
    def costs(self) -> CostModel:
        return self.plan.costs

    @property
    def makespan(self) -> float:
        return self.timeline.makespan

    @cached_property
    def _trace(self) -> Trace:
        with paused_gc():
            return build_trace(self)

    def trace(self) -> Trace:
        """The shared-format trace (built once, on first use)."""
        return self._trace

    def metrics(self) -> Metrics:
        """The metrics of the trace, read off the simulation's arrays without building it: equal to
        traces.metrics.compute_metrics(self.trace()) (simulator/summary.py)."""
        with paused_gc():
            return simulated_metrics(self)


def simulate(schedule: Schedule, costs: CostModel | None = None, *, meta: dict | None = None) -> Simulation:
    """Run the SimPy model of `schedule` (lowered: with sends, receives, OPT and versions)."""
    costs = costs or CostModel.uniform()
    with paused_gc():
        plan = make_plan(schedule, costs)
        timeline = run_plan(plan)
        memory = memory_over_time(memory_plan(schedule, costs), plan, timeline)
    return Simulation(plan=plan, timeline=timeline, memory=memory, meta=dict(meta or {}))


def build_trace(simulation: Simulation) -> Trace:
    """Events sorted by (start, rank, position in the rank's list): equal inputs, equal bytes."""
    plan, timeline, memory = simulation.plan, simulation.timeline, simulation.memory
    stream = {kind: stream_of(Action(0, kind)) for kind in Kind}
    events = [
        Event(
            rank=rank,
            action=action,
            start=start,
            end=end,
            stream=stream[action.kind],
            bytes=size,
            memory=held,
        )
        for rank, actions in enumerate(plan.schedule.actions)
        for action, start, end, size, held in zip(
            actions, timeline.starts[rank], timeline.ends[rank], plan.nbytes[rank], memory[rank], strict=True
        )
    ]
    starts = [start for rank_starts in timeline.starts for start in rank_starts]
    # a stable sort on the start alone keeps the rank-major (rank, position) order among equal starts
    order = sorted(range(len(starts)), key=starts.__getitem__)
    return Trace(
        source="simulated",
        schedule=ScheduleHeader.of(plan.schedule),
        events=tuple(events[index] for index in order),
        meta=trace_meta(simulation),
    )


def trace_meta(simulation: Simulation) -> dict[str, Any]:
    """Provenance and workload (traces/README.md): cost model, seed, simulator, samples and tokens."""
    costs = simulation.costs
    return {
        "simulator": SIMULATOR,
        "cost_model": costs.to_dict(),
        "seed": costs.seed,
        "workload": {
            "microbatch_size": costs.microbatch_size,
            "sequence_length": costs.sequence_length,
            "data_parallel": costs.data_parallel,
        },
        "memory_capacity": costs.memory_capacity,
        **simulation.meta,
    }

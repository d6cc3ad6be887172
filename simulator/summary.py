"""A simulation's metrics read off its arrays without building the trace: `Simulation.metrics()`.

    from simulator.summary import simulated_metrics
    simulated_metrics(simulation) == compute_metrics(simulation.trace())   # always (tests/simulator)

traces/metrics.py computes the metrics of any trace, predicted or measured, from its Event objects; for a
simulated run the same numbers follow from the plan, the timeline and the memory arrays in a few passes,
with no Event per action (a million-action trace costs seconds to build; these passes a fraction).

Note: why the two agree to the bit. A trace lists events by start time; on one rank the clock only moves
forward, so the rank's compute and receive events keep their program order in the trace, and the sums
(busy time per rank) add the same floats in the same order. Sends move to the end of a rank's executed
order, but no staleness count (versions, delays, mismatches, in-flight activations) looks at a send, so
the lowered schedule itself gives the trace's answers.
"""

from __future__ import annotations

from functools import reduce
from itertools import compress
from operator import add, sub
from typing import TYPE_CHECKING

from schedules.analytics import delays, mismatches, peak_activations, steady_step_time, weight_versions
from simulator.plan import COMPUTE
from traces.metrics import Metrics

if TYPE_CHECKING:
    from simulator.simulation import Simulation


def simulated_metrics(simulation: Simulation) -> Metrics:
    """Every field of traces.metrics.Metrics for this simulation, equal to compute_metrics of its trace."""
    from simulator.simulation import trace_meta

    schedule, timeline = simulation.schedule, simulation.timeline
    workload = trace_meta(simulation).get("workload") or {}
    samples = (workload.get("microbatch_size") or 1) * (workload.get("data_parallel") or 1)
    tokens = workload.get("sequence_length") or 1
    origin = min((min(starts) for starts in timeline.starts if starts), default=0.0)
    end = max((max(ends) for ends in timeline.ends if ends), default=0.0)
    makespan = end - origin
    busy = busy_per_rank(simulation)
    step_time = _step_time(simulation, origin, end)
    capacity = schedule.ranks * step_time
    utilization = [b / makespan if makespan > 0 else 0.0 for b in busy]
    per_stage, per_rank = peak_activations(schedule)
    throughput = schedule.microbatches * samples / step_time if step_time > 0 else 0.0
    return Metrics(
        schedule=schedule.name,
        source="simulated",
        ranks=schedule.ranks,
        stages=schedule.num_stages,
        microbatches=schedule.microbatches,
        steps=schedule.steps,
        makespan=makespan,
        step_time=step_time,
        samples_per_s=throughput,
        tokens_per_s=throughput * tokens,
        bubble_fraction=1 - sum(busy) / schedule.steps / capacity if capacity > 0 else 0.0,
        utilization=utilization,
        bubble=[1 - u for u in utilization],
        peak_memory=[max(held) if held else None for held in simulation.memory],
        peak_activations=per_stage,
        peak_activations_per_rank=per_rank,
        weight_versions=weight_versions(schedule),
        delay=delays(schedule),
        mismatches=mismatches(schedule),
    )


def busy_per_rank(simulation: Simulation) -> list[float]:
    """Per rank: the sum of end - start over its compute actions (everything but sends and receives),
    added in program order as traces/metrics.py adds them in trace order (reduce, not sum(): sum()
    compensates rounding on newer Pythons, a loop does not)."""
    timeline, plan = simulation.timeline, simulation.plan
    busy = []
    for rank, classes in enumerate(plan.classes):
        computing = [cls == COMPUTE for cls in classes]
        spans = map(sub, compress(timeline.ends[rank], computing), compress(timeline.starts[rank], computing))
        busy.append(reduce(add, spans, 0.0))
    return busy


def _step_time(simulation: Simulation, origin: float, end: float) -> float:
    """schedules.analytics.steady_step_time over the simulated ends (a step ends with its last F/B/I/W)."""
    ends = simulation.timeline.ends
    finished = (
        pair
        for rank, actions in enumerate(simulation.schedule.actions)
        for pair in zip(actions, ends[rank], strict=True)
    )
    return steady_step_time(finished, simulation.schedule.steps, start=origin, makespan=end)

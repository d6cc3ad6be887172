"""traces.metrics.Metrics of a simulation on columns, equal to what Simulation.metrics() reports.

    metrics = column_metrics(plan, starts, ends, memory)

The same quantities as simulator/summary.py, from flat arrays: busy time per rank added in program order
(a running sum, so the floats match the IR path's to the bit), step ends per step, memory peaks per rank
and the staleness counts of simulator/columnar/staleness.py.
"""

from __future__ import annotations

from statistics import median

import numpy as np

from simulator.columnar import staleness
from simulator.columnar.columns import B, F, I, W, is_kind
from simulator.columnar.plan import ColumnPlan
from simulator.plan import COMPUTE
from traces.metrics import Metrics


def column_metrics(plan: ColumnPlan, starts: np.ndarray, ends: np.ndarray, memory: np.ndarray) -> Metrics:
    """Every field of Metrics for the simulated columns."""
    columns, costs = plan.columns, plan.costs
    origin = float(starts.min()) if starts.size else 0.0
    end = float(ends.max()) if ends.size else 0.0
    makespan = end - origin
    busy = busy_per_rank(plan, starts, ends)
    step_time = _step_time(plan, ends, origin, end)
    capacity = columns.ranks * step_time
    utilization = [b / makespan if makespan > 0 else 0.0 for b in busy]
    per_stage, per_rank = staleness.peak_activations(columns)
    samples = costs.microbatch_size * costs.data_parallel
    throughput = columns.microbatches * samples / step_time if step_time > 0 else 0.0
    return Metrics(
        schedule=columns.name,
        source="simulated",
        ranks=columns.ranks,
        stages=columns.num_stages,
        microbatches=columns.microbatches,
        steps=columns.steps,
        makespan=makespan,
        step_time=step_time,
        samples_per_s=throughput,
        tokens_per_s=throughput * costs.sequence_length,
        bubble_fraction=1 - sum(busy) / columns.steps / capacity if capacity > 0 else 0.0,
        utilization=utilization,
        bubble=[1 - u for u in utilization],
        peak_memory=_peaks(columns.offsets, memory),
        peak_activations=per_stage,
        peak_activations_per_rank=per_rank,
        weight_versions=staleness.weight_versions(columns),
        delay=staleness.delays(columns),
        mismatches=staleness.mismatches(columns),
    )


def busy_per_rank(plan: ColumnPlan, starts: np.ndarray, ends: np.ndarray) -> list[float]:
    """Per rank: end - start summed over compute actions one after the other (np.cumsum adds in order,
    as the IR path's loop does; np.sum would pair them up and round differently)."""
    busy = []
    compute = plan.classes == COMPUTE
    for rank in range(plan.columns.ranks):
        span = plan.columns.span(rank)
        spans = (ends[span] - starts[span])[compute[span]]
        busy.append(float(np.cumsum(spans)[-1]) if spans.size else 0.0)
    return busy


def _step_time(plan: ColumnPlan, ends: np.ndarray, origin: float, end: float) -> float:
    """schedules.analytics.steady_step_time: the median of the differences of the steps' last F/B/I/W."""
    columns = plan.columns
    if columns.steps < 2:
        return end - origin
    computed = is_kind(columns.kind, F, B, I, W)
    step_end = np.full(columns.steps, origin)
    np.maximum.at(step_end, columns.step[computed], ends[computed])
    finished = step_end.tolist()
    return median(finished[k] - finished[k - 1] for k in range(1, columns.steps))


def _peaks(offsets: np.ndarray, memory: np.ndarray) -> list[int | None]:
    lengths = np.diff(offsets)
    starts = offsets[:-1][lengths > 0]
    peaks = np.maximum.reduceat(memory, starts).tolist() if starts.size else []
    found = iter(peaks)
    return [next(found) if length else None for length in lengths.tolist()]

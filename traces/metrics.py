"""Metrics of a trace, predicted or measured: step time, throughput, utilization, bubble, memory, staleness.

    from traces.io import read_trace
    from traces.metrics import compute_metrics, memory_series
    metrics = compute_metrics(read_trace("runs/a/trace.json"))
    metrics.to_dict()["step_time"]

Everything is read off the events: their times (whatever clock produced them), the memory they
recorded, and the order and weight versions of the actions each rank actually ran. The counting rules
(weight versions held, delay, mismatches, in-flight activations) are schedules/analytics.py's, applied
to the trace's per-rank order instead of the planned one, so a simulated trace with t_F = 1, t_B = 2 and
no communication reports exactly what `analyze()` reports for its schedule.

Note: the steady state is the median step, as in schedules/analytics.py (a step ends with its last
forward or backward on any rank, not its update):

    step_time       = median over k = 1..K-1 of end(step k) - end(step k-1)   (the makespan when K = 1)
    bubble_fraction = 1 - compute per step / (ranks x step_time)

The workload (samples per microbatch, tokens per sample, data-parallel replicas) comes from the trace's
meta["workload"] unless given (traces/README.md).

A trace read from a file is counted on its columns (traces/columnar/metrics.py: a million events in a
tenth of a second, no Event made), any other on its Events (count_events); both give the same numbers,
to the bit (tests/traces/test_columnar.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schedules.analytics import delays, mismatches, peak_activations, steady_step_time, weight_versions
from schedules.fileio import paused_gc
from schedules.ir import Schedule
from traces.columnar.columns import columns_of
from traces.columnar.metrics import column_counts
from traces.schema import Event, Trace

COMPUTE_STREAM = "compute"


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """What one trace says about its run. Times in seconds (the trace's clock), memory in bytes."""

    schedule: str
    """Registry name of the schedule."""
    source: str
    """'simulated' or 'measured'."""
    ranks: int
    """P."""
    stages: int
    """Stages, virtual ones included (interleaved, AMDP)."""
    microbatches: int
    """m, per step."""
    steps: int
    """Optimizer steps in the trace."""
    makespan: float
    """Seconds from the first start to the last end."""
    step_time: float
    """Seconds per optimizer step in the steady state (the makespan for a single step)."""
    samples_per_s: float
    """microbatches x microbatch_size x data_parallel / step_time."""
    tokens_per_s: float
    """samples_per_s x sequence_length."""
    bubble_fraction: float
    """Idle share of ranks x step_time (0..1): 1 - compute per step / (ranks x step_time)."""
    utilization: list[float]
    """Per rank: compute time / makespan (0..1)."""
    bubble: list[float]
    """Per rank: 1 - utilization."""
    peak_memory: list[int | None]
    """Per rank: most bytes held (max of the events' memory; None where the trace has none)."""
    peak_activations: list[float]
    """Per stage: most microbatches between forward and backward for inputs (divided by chunks)."""
    peak_activations_per_rank: list[float]
    """Per rank: the same summed over the rank's stages (divided by chunks)."""
    weight_versions: list[int]
    """Per stage: most weight versions held at once."""
    delay: list[int]
    """Per stage: largest tau_s over its updates."""
    mismatches: list[int]
    """Per stage: microbatches whose forward and last backward read different versions."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `throughput` holds samples/s and tokens/s."""
        return {
            "schedule": self.schedule,
            "source": self.source,
            "ranks": self.ranks,
            "stages": self.stages,
            "microbatches": self.microbatches,
            "steps": self.steps,
            "makespan": self.makespan,
            "step_time": self.step_time,
            "throughput": {"samples_per_s": self.samples_per_s, "tokens_per_s": self.tokens_per_s},
            "bubble_fraction": self.bubble_fraction,
            "utilization": list(self.utilization),
            "bubble": list(self.bubble),
            "peak_memory": list(self.peak_memory),
            "peak_activations": list(self.peak_activations),
            "peak_activations_per_rank": list(self.peak_activations_per_rank),
            "weight_versions": list(self.weight_versions),
            "delay": list(self.delay),
            "mismatches": list(self.mismatches),
        }


def compute_metrics(
    trace: Trace,
    *,
    microbatch_size: int | None = None,
    sequence_length: int | None = None,
    data_parallel: int | None = None,
) -> Metrics:
    """All metrics of a trace; the workload arguments default to trace.meta['workload'] (else 1)."""
    with paused_gc():
        return _compute_metrics(trace, microbatch_size, sequence_length, data_parallel)


@dataclass(frozen=True, kw_only=True)
class Counted:
    """What the events say, before the workload turns it into throughput: computed on the columns of a
    trace read from a file (traces/columnar/metrics.py), else on its Events (the same numbers)."""

    origin: float
    """The first start (s)."""
    end: float
    """The last end (s)."""
    busy: list[float]
    """Per rank: compute seconds, added up in trace order."""
    step_time: float
    """Metrics.step_time."""
    peak_memory: list[int | None]
    """Metrics.peak_memory."""
    peak_activations: list[float]
    """Metrics.peak_activations."""
    peak_activations_per_rank: list[float]
    """Metrics.peak_activations_per_rank."""
    weight_versions: list[int]
    """Metrics.weight_versions."""
    delay: list[int]
    """Metrics.delay."""
    mismatches: list[int]
    """Metrics.mismatches."""


def _compute_metrics(
    trace: Trace, microbatch_size: int | None, sequence_length: int | None, data_parallel: int | None
) -> Metrics:
    workload = trace.meta.get("workload") or {}
    samples = (microbatch_size or workload.get("microbatch_size") or 1) * (
        data_parallel or workload.get("data_parallel") or 1
    )
    tokens = sequence_length or workload.get("sequence_length") or 1
    header = trace.schedule
    counted = _counted(trace)
    makespan, step_time, busy = counted.end - counted.origin, counted.step_time, counted.busy
    capacity = header.ranks * step_time
    utilization = [b / makespan if makespan > 0 else 0.0 for b in busy]
    throughput = header.microbatches * samples / step_time if step_time > 0 else 0.0
    return Metrics(
        schedule=header.name,
        source=trace.source,
        ranks=header.ranks,
        stages=len(header.placement),
        microbatches=header.microbatches,
        steps=header.steps,
        makespan=makespan,
        step_time=step_time,
        samples_per_s=throughput,
        tokens_per_s=throughput * tokens,
        bubble_fraction=1 - sum(busy) / header.steps / capacity if capacity > 0 else 0.0,
        utilization=utilization,
        bubble=[1 - u for u in utilization],
        peak_memory=counted.peak_memory,
        peak_activations=counted.peak_activations,
        peak_activations_per_rank=counted.peak_activations_per_rank,
        weight_versions=counted.weight_versions,
        delay=counted.delay,
        mismatches=counted.mismatches,
    )


def _counted(trace: Trace) -> Counted:
    columns = columns_of(trace)
    fields = None if columns is None else column_counts(columns, trace.schedule)
    return Counted(**fields) if fields is not None else count_events(trace)


def count_events(trace: Trace) -> Counted:
    """The counts on the Events, whatever made the trace."""
    origin = min((event.start for event in trace.events), default=0.0)
    end = trace.makespan
    finished = ((event.action, event.end) for event in trace.events)
    ordered = executed_schedule(trace)
    per_stage, per_rank = peak_activations(ordered)
    return Counted(
        origin=origin,
        end=end,
        busy=_busy_per_rank(trace),
        step_time=steady_step_time(finished, trace.schedule.steps, start=origin, makespan=end),
        peak_memory=peak_memory(trace),
        peak_activations=per_stage,
        peak_activations_per_rank=per_rank,
        weight_versions=weight_versions(ordered),
        delay=delays(ordered),
        mismatches=mismatches(ordered),
    )


def executed_schedule(trace: Trace) -> Schedule:
    """The per-rank action order the trace ran: each rank's compute and receive events in trace order
    (serial on a rank, so in the order they ran), then its sends in trace order."""
    header = trace.schedule
    serial: list[list[Event]] = [[] for _ in range(header.ranks)]
    sends: list[list[Event]] = [[] for _ in range(header.ranks)]
    for event in trace.events:
        (sends if event.stream == "send" else serial)[event.rank].append(event)
    return Schedule(
        name=header.name,
        layout=header.layout,
        microbatches=header.microbatches,
        steps=header.steps,
        chunks=header.chunks,
        versioning=header.versioning,
        actions=tuple(
            tuple(event.action for event in serial[rank] + sends[rank]) for rank in range(header.ranks)
        ),
    )


def peak_memory(trace: Trace) -> list[int | None]:
    """Per rank: the largest `memory` any of its events recorded (None if none did)."""
    peaks: list[int | None] = [None] * trace.schedule.ranks
    for event in trace.events:
        if event.memory is not None:
            current = peaks[event.rank]
            peaks[event.rank] = event.memory if current is None else max(current, event.memory)
    return peaks


def memory_series(trace: Trace) -> list[list[tuple[float, int]]]:
    """Per rank: (time, bytes held), in time order. The time is the event's end, or for a send its start
    (an event's memory is what the rank holds right after it, and a send is done when posted)."""
    series: list[list[tuple[float, int]]] = [[] for _ in range(trace.schedule.ranks)]
    for event in trace.events:
        if event.memory is not None:
            moment = event.start if event.stream == "send" else event.end
            series[event.rank].append((moment, event.memory))
    for points in series:
        points.sort(key=lambda point: point[0])
    return series


def _busy_per_rank(trace: Trace) -> list[float]:
    busy = [0.0] * trace.schedule.ranks
    for event in trace.events:
        if event.stream == COMPUTE_STREAM:
            busy[event.rank] += event.end - event.start
    return busy

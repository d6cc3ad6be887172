"""Exact analytics of a schedule: makespan, bubble, in-flight activations, weight versions, delay.

from schedules import build
from schedules.analytics import analyze
analyze(build("1f1b", ranks=4, microbatches=8)).to_dict()   # makespan 33, bubble_fraction 3/11, ...

Times come from the dry run (schedules/dryrun.py) with the given Costs; everything else is counted on
each rank's action order, so the numbers are exact and match the closed forms of
docs/schedules.md (tests/schedules).

Note: the per-step quantities are taken in the steady state: the median of the steps' durations after
the first. A step ends when its last forward or backward on any rank ends (not its update: AMDP applies
step k's update inside step k+1's first round):

    step_time = median over k = 1..K-1 of (step_end[k] - step_end[k-1])   (K = steps >= 2; else the makespan)

Every schedule here is periodic from its second step on, so under fixed costs this is the duration of
every one of those steps; in a measured run (or a simulation with jitter) the median keeps one step
slowed by validation or a hiccup from moving the figure.
    bubble_fraction = 1 - busy per step / (ranks x step_time)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median
from typing import Any

from schedules.costs import Costs, action_costs
from schedules.dryrun import Timeline, dry_run
from schedules.ir import BACKWARD_KINDS, COMM_KINDS, COMPUTE_KINDS, WEIGHT_GRAD_KINDS, Action, Kind, Schedule
from schedules.semantics import stage_delays, version_lifetimes


@dataclass(frozen=True, kw_only=True)
class Analytics:
    """What analyze() reports. Times are in the cost unit (t_F = 1 by default)."""

    schedule: str
    """Registry name of the schedule."""
    stages: int
    """Stages (virtual stages for interleaved and AMDP)."""
    microbatches: int
    steps: int
    chunks: int
    makespan: float
    """End of the last action (time units)."""
    step_time: float
    """Steady-state time of one optimizer step (time units); the makespan when steps = 1."""
    bubble_fraction: float
    """Idle share of ranks x step_time (0..1)."""
    bubble_ratio: float
    """Idle over ideal compute per step: ranks x step_time / busy - 1."""
    peak_activations: list[float]
    """Per stage: most microbatches whose forward ran and whose backward for inputs (B or I) has not
    (divided by chunks)."""
    peak_activations_per_rank: list[float]
    """Per rank: the same, summed over the rank's stages at each position (divided by chunks)."""
    weight_versions: list[int]
    """Per stage: most weight versions held at once (the current one and older ones still to be read)."""
    delay: list[int]
    """Per stage: largest tau_s, (version written - 1) - version read by the gradients an update applies
    (which update a gradient joins: schedules.semantics)."""
    mismatches: list[int]
    """Per stage: microbatches whose forward and last backward read different versions."""
    utilization: list[float]
    """Per rank: compute busy time / makespan (0..1)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain ints, floats and lists."""
        return {
            "schedule": self.schedule,
            "stages": self.stages,
            "microbatches": self.microbatches,
            "steps": self.steps,
            "chunks": self.chunks,
            "makespan": _plain(self.makespan),
            "step_time": _plain(self.step_time),
            "bubble_fraction": _plain(self.bubble_fraction),
            "bubble_ratio": _plain(self.bubble_ratio),
            "peak_activations": [_plain(x) for x in self.peak_activations],
            "peak_activations_per_rank": [_plain(x) for x in self.peak_activations_per_rank],
            "weight_versions": list(self.weight_versions),
            "delay": list(self.delay),
            "mismatches": list(self.mismatches),
            "utilization": [_plain(x) for x in self.utilization],
        }


def _plain(value: float) -> int | float:
    """A JSON number: Fractions as floats, whole numbers as ints (3.0 and 2.9999999999999996 -> 3)."""
    value = float(value)
    return round(value) if abs(value - round(value)) < 1e-9 else value


def analyze(schedule: Schedule, costs: Costs | None = None) -> Analytics:
    """All analytics of one schedule under the given costs (default Costs(): t_F = 1, B = 2)."""
    costs = costs or Costs()
    timeline = dry_run(schedule, costs)
    busy = _busy_per_rank(schedule, costs)
    step_time = _step_time(timeline)
    busy_per_step = sum(busy) / schedule.steps
    capacity = schedule.ranks * step_time
    per_stage, per_rank = peak_activations(schedule)
    return Analytics(
        schedule=schedule.name,
        stages=schedule.num_stages,
        microbatches=schedule.microbatches,
        steps=schedule.steps,
        chunks=schedule.chunks,
        makespan=timeline.makespan,
        step_time=step_time,
        bubble_fraction=1 - busy_per_step / capacity if capacity else 0,
        bubble_ratio=capacity / busy_per_step - 1 if busy_per_step else 0,
        peak_activations=per_stage,
        peak_activations_per_rank=per_rank,
        weight_versions=weight_versions(schedule),
        delay=delays(schedule),
        mismatches=mismatches(schedule),
        utilization=[b / timeline.makespan if timeline.makespan else 0 for b in busy],
    )


def _busy_per_rank(schedule: Schedule, costs: Costs) -> list[float]:
    """Compute time (everything but sends and receives) each rank spends."""
    return [
        sum(cost for a, cost in zip(actions, durations, strict=True) if a.kind not in COMM_KINDS)
        for actions, durations in zip(schedule.actions, action_costs(costs, schedule), strict=True)
    ]


def _step_time(timeline: Timeline) -> float:
    finished = (
        (action, end)
        for rank, actions in enumerate(timeline.schedule.actions)
        for action, end in zip(actions, timeline.end[rank], strict=True)
    )
    # start=0, an int: Fraction costs stay exact (0.0 would turn them into floats)
    return steady_step_time(finished, timeline.schedule.steps, start=0, makespan=timeline.makespan)


def steady_step_time(
    finished: Iterable[tuple[Action, float]], steps: int, *, start: float, makespan: float
) -> float:
    """Steady-state time of one optimizer step: the median of step_end[k] - step_end[k-1] over k = 1..K-1,
    where a step ends with its last F/B/I/W on any rank (not its update: AMDP runs step k's update
    inside step k+1); with one step, makespan - start. `finished` gives (action, end time) pairs, from a
    dry run or a trace."""
    if steps < 2:
        return makespan - start
    step_end: dict[int, float] = defaultdict(lambda: start)
    for action, end in finished:
        if action.kind in COMPUTE_KINDS and end > step_end[action.step]:
            step_end[action.step] = end
    return median(step_end[k] - step_end[k - 1] for k in range(1, steps))


def peak_activations(schedule: Schedule) -> tuple[list[float], list[float]]:
    """(per stage, per rank) peak in-flight microbatches in each rank's order, divided by chunks.

    A microbatch is in flight at a stage from its forward until its backward for inputs (B, or I when
    the backward is split): that backward consumes the stashed activations. A deferred W keeps only the
    layer inputs it needs, which the simulator's byte-level memory model counts; here ZB-H1 thus peaks
    as 1F1B does (docs/schedules.md).
    """
    per_stage = [0] * schedule.num_stages
    per_rank = [0] * schedule.ranks
    forward = Kind.F
    counted = frozenset({Kind.F, *BACKWARD_KINDS})
    for rank, actions in enumerate(schedule.actions):
        live = [0] * schedule.num_stages
        total = peak = 0
        for action in [a for a in actions if a.kind in counted]:
            stage = action.stage
            if action.kind is forward:
                live[stage] += 1
                total += 1
                if live[stage] > per_stage[stage]:
                    per_stage[stage] = live[stage]
                if total > peak:
                    peak = total
            else:
                live[stage] -= 1
                total -= 1
        per_rank[rank] = peak
    return _per_chunk(per_stage, schedule.chunks), _per_chunk(per_rank, schedule.chunks)


def _per_chunk(counts: list[int], chunks: int) -> list[float]:
    return list(counts) if chunks == 1 else [count / chunks for count in counts]


def weight_versions(schedule: Schedule) -> list[int]:
    """Per stage: the most weight versions it holds at once (schedules.semantics.version_lifetimes: a
    version from the action that writes it until it is superseded and read for the last time)."""
    result = [1] * schedule.num_stages
    for actions in schedule.actions:
        for stage, count in _most_held(version_lifetimes(actions)).items():
            result[stage] = max(result[stage], count)
    return result


def _most_held(lifetimes: list[tuple[int, int, int, float]]) -> dict[int, int]:
    """Per stage, the peak of its versions' overlapping lifetimes."""
    events: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for stage, _, begin, end in lifetimes:
        events[stage] += [(begin, 1), (end, -1)]
    most = {}
    for stage, changes in events.items():
        held = peak = 0
        for _, change in sorted(changes):  # at one position, a release (-1) sorts before a write (+1)
            held += change
            peak = max(peak, held)
        most[stage] = peak
    return most


def delays(schedule: Schedule) -> list[int]:
    """Per stage: the largest tau_s over the updates it receives (schedules.semantics.stage_delays).

    Which update a gradient joins is said once, in schedules/semantics.py: the first update of its stage
    that its rank runs after it. An AMDP replica receives its owner's updates, so every replica of a
    depth reports the same delay (P = 4: stages 3 and 7 alike).
    """
    return stage_delays(schedule)


def mismatches(schedule: Schedule) -> list[int]:
    """Per stage: microbatches whose forward and last backward (B, or W if split) read other versions."""
    forward_kind, grads, everything = Kind.F, WEIGHT_GRAD_KINDS, schedule.actions
    # keyed by (stage, microbatch, step); a later backward of a key overwrites an earlier one
    forward = {
        (a.stage, a.microbatch, a.step): a.version
        for actions in everything
        for a in actions
        if a.kind is forward_kind
    }
    last_backward = {
        (a.stage, a.microbatch, a.step): a.version
        for actions in everything
        for a in actions
        if a.kind in grads
    }
    result = [0] * schedule.num_stages
    for key, version in last_backward.items():
        if version is not None and forward.get(key) is not None and forward[key] != version:
            result[key[0]] += 1
    return result

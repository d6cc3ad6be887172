"""Memory per rank over time: weights x versions held, gradients, optimizer state, stashed activations and
communication buffers, from the schedule's order and versions plus the simulated send times.

    static = memory_plan(schedule, costs)              # bytes after each action, in program order
    held = memory_over_time(static, plan, timeline)    # the same with send buffers freed on time

Note: what is held, per rank (sizes per virtual stage from the cost model, divided by chunks):

    weights      one copy per version held: version v of a stage from the action that writes it (OPT or
                 RECV_W; version 0 from the start) until it is superseded and read for the last time
                 (the rule of schedules/analytics.weight_versions)
    optimizer    stages the rank updates: OPTIMIZER_STATE[optimizer] x weights (+ rotation_bytes); with
                 master weights fp32 state and an fp32 copy of the weights, 2 x (1 + that) x weights
    gradients    a stage's buffer (twice the weights, fp32, with master weights) from its first B/W
                 after an update until its OPT (or SEND_G), or from the start, throughout, with
                 persistent gradients (Megatron-LM's contiguous buffer): the gradients that join one
                 update (schedules.semantics), so AMDP's last-stage backward of the next step, which
                 joins the update it precedes, needs no second buffer
                 + each RECV_G's buffer until the stage's next OPT
    activations  stash_bytes from F until its B; split: all but weight_input_bytes until I, those until W
    buffers      a RECV_F/RECV_B buffer until the action that consumes it; a send's buffer from the
                 moment it is posted until its transfer ends (the only part that needs simulated time)

An event's memory is what the rank holds right after the action: for a send, right after it is posted
(its own buffer included); for anything else, when it ends.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from operator import sub

from schedules.ir import Kind, Schedule
from schedules.semantics import version_lifetimes
from simulator.costs import CostModel
from simulator.engine import Timeline
from simulator.plan import SEND, Plan, virtual_stage_cost


@dataclass(frozen=True, kw_only=True)
class StageBytes:
    """Sizes of one virtual stage, in bytes."""

    weights: int
    """One copy of the weights."""
    gradients: int
    """The stage's gradient buffer (as big as the weights; twice, fp32, with master weights)."""
    optimizer: int
    """Optimizer state of the stage (held by the rank that updates it)."""
    stash: int
    """Activations kept per in-flight microbatch."""
    kept: int
    """Part of the stash a split backward keeps from I until W."""
    activation: int
    """One boundary activation (or its gradient): a send or receive buffer."""


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """Bytes held per rank in program order, send buffers never freed (memory_over_time frees them)."""

    base: list[int]
    """Per rank: bytes before the first action (version-0 weights and optimizer state)."""
    static: list[list[int]]
    """static[rank][i]: bytes after action i, counting every send buffer posted so far."""


def stage_bytes(schedule: Schedule, costs: CostModel) -> list[StageBytes]:
    out = []
    for stage in range(schedule.num_stages):
        entry, chunks = virtual_stage_cost(schedule, costs, stage)
        out.append(
            StageBytes(
                weights=entry.weight_bytes // chunks,
                gradients=entry.weight_bytes // chunks * (2 if costs.master_weights else 1),
                optimizer=costs.optimizer_state_bytes(entry) // chunks,
                stash=entry.stash_bytes // chunks,
                kept=entry.weight_input_bytes // chunks,
                activation=entry.activation_bytes,
            )
        )
    return out


def memory_plan(schedule: Schedule, costs: CostModel) -> MemoryPlan:
    """Bytes after every action in program order (send buffers are freed later, by memory_over_time)."""
    sizes = stage_bytes(schedule, costs)
    constants = _constants(schedule, sizes)
    base, static = [], []
    for rank, actions in enumerate(schedule.actions):
        delta = [constants[a.stage][a.kind] for a in actions]
        start = _weights(actions, set(schedule.layout.rank_stages(rank)), sizes, delta)
        updated = _stateful(actions, sizes, delta, persistent=costs.persistent_gradients)
        start += sum(sizes[stage].optimizer for stage in updated)
        if costs.persistent_gradients:  # one gradient buffer per stage held, allocated up front
            start += sum(sizes[stage].gradients for stage in schedule.layout.rank_stages(rank))
        base.append(start)
        static.append(list(accumulate(delta, initial=start))[1:])
    return MemoryPlan(base=base, static=static)


def _constants(schedule: Schedule, sizes: list[StageBytes]) -> list[dict[Kind, int]]:
    """Per stage and kind, the bytes an action always allocates (+) or frees (-).

    A received activation (or gradient) becomes part of the stash (or is consumed) by the action that
    uses it, which therefore frees the receive buffer: F when the previous stage is on another rank
    (a RECV_F came first), B or I when the next stage is.
    """
    layout = schedule.layout
    out = []
    for stage, size in enumerate(sizes):
        rank = layout.placement[stage]
        before, after = layout.prev_stage(stage), layout.next_stage(stage)
        received_input = size.activation if before is not None and layout.placement[before] != rank else 0
        received_grad = size.activation if after is not None and layout.placement[after] != rank else 0
        table = dict.fromkeys(Kind, 0)
        table.update(
            {
                Kind.F: size.stash - received_input,
                Kind.B: -received_grad - size.stash,
                Kind.I: -received_grad - (size.stash - size.kept),
                Kind.W: -size.kept,
                Kind.RECV_F: size.activation,
                Kind.RECV_B: size.activation,
                Kind.SEND_F: size.activation,
                Kind.SEND_B: size.activation,
                Kind.SEND_G: size.weights,
                Kind.SEND_W: size.weights,
                Kind.RECV_G: size.weights,
            }
        )
        out.append(table)
    return out


def _weights(actions, stages: set[int], sizes: list[StageBytes], delta: list[int]) -> int:
    """Add weight-version changes to delta; return the bytes held from the start (`stages`: those the
    rank holds, whose version 0 it keeps even if no action names a version)."""
    lifetimes = version_lifetimes(actions)
    covered = {stage for stage, *_ in lifetimes}
    start = sum(sizes[stage].weights for stage in stages - covered)
    for stage, _, begin, end in lifetimes:
        size = sizes[stage].weights
        if begin < 0:
            start += size
        else:
            delta[begin] += size
        if end != math.inf and end >= 0:
            delta[int(end)] -= size
    return start


_STATEFUL = frozenset({Kind.B, Kind.W, Kind.OPT, Kind.SEND_G, Kind.RECV_G})


def _stateful(actions, sizes: list[StageBytes], delta: list[int], *, persistent: bool = False) -> set[int]:
    """What depends on history: a stage's gradient buffer (allocated by its first B/W after an update,
    freed by OPT or SEND_G; never, when `persistent`: memory_plan counts it from the start) and received
    gradients (freed by OPT). Returns the stages the rank updates."""
    has_grad: set[int] = set()
    received: dict[int, int] = {}  # stage -> bytes of RECV_G buffers waiting for its OPT
    updated: set[int] = set()
    for i, a in [(i, a) for i, a in enumerate(actions) if a.kind in _STATEFUL]:
        kind, stage, size = a.kind, a.stage, sizes[a.stage]
        if kind is Kind.B or kind is Kind.W:
            if not persistent and stage not in has_grad:
                has_grad.add(stage)
                delta[i] += size.gradients
        elif kind is Kind.RECV_G:
            received[stage] = received.get(stage, 0) + size.weights
        else:  # OPT or SEND_G
            if kind is Kind.OPT:
                updated.add(stage)
                delta[i] -= received.pop(stage, 0)
            if not persistent and stage in has_grad:
                has_grad.discard(stage)
                delta[i] -= size.gradients
    return updated


def memory_over_time(static: MemoryPlan, plan: Plan, timeline: Timeline) -> list[list[int]]:
    """memory[rank][i]: bytes held right after action i, each send's buffer freed when its transfer
    ends. A send is sampled when it is posted (its own buffer included), anything else when it ends.

    A send's buffer goes at the first later action whose clock (its end; for a send, the clock before
    it) has reached the end of the transfer; the clock never goes back, so a binary search finds it.
    """
    blocking = not plan.costs.overlap
    out = []
    for rank, running in enumerate(static.static):
        classes, nbytes, ends = plan.classes[rank], plan.nbytes[rank], timeline.ends[rank]
        if not any(size for size, cls in zip(nbytes, classes, strict=True) if cls == SEND):
            out.append(list(running))  # no send holds a buffer: nothing to free
            continue
        clock, now = [], 0.0
        for cls, end in zip(classes, ends, strict=True):
            if cls != SEND:
                now = end
            clock.append(now)
            if blocking:
                now = end
        freed = [0] * (len(classes) + 1)
        for i, cls in enumerate(classes):
            if cls == SEND:
                freed[bisect_left(clock, ends[i], i + 1)] += nbytes[i]
        out.append(list(map(sub, running, accumulate(freed[:-1]))))
    return out

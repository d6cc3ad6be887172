"""Memory per rank over time: weights x versions held, gradients, optimizer state, stashed activations and
communication buffers, from the schedule's order and versions plus the simulated send times.

    static = memory_plan(schedule, costs)              # bytes after each action, in program order
    held = memory_over_time(static, plan, timeline)    # the same with send buffers freed on time

Note: what is held, per rank (sizes per virtual stage from the cost model, divided by chunks):

    weights      one copy per version held: version v of a stage from the action that writes it (OPT or
                 RECV_W; version 0 from the start) until it is superseded and read for the last time
                 (the rule of schedules/analytics.weight_versions)
    optimizer    stages the rank updates: OPTIMIZER_STATE[optimizer] x weights (+ rotation_bytes)
    gradients    a stage's buffer from its first B/W after an update until its OPT (or SEND_G)
                 + each RECV_G's buffer until the stage's next OPT
    activations  stash_bytes from F until the last backward of that microbatch (W when split, else B)
    buffers      a RECV_F/RECV_B buffer until the action that consumes it; a send's buffer from the
                 moment it is posted until its transfer ends (the only part that needs simulated time)

An event's memory is what the rank holds right after the action: for a send, right after it is posted
(its own buffer included); for anything else, when it ends.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from schedules.ir import Action, Kind, Schedule
from simulator.costs import CostModel
from simulator.engine import Timeline
from simulator.plan import SEND, Plan, virtual_stage_cost

VERSION_WRITERS = (Kind.OPT, Kind.RECV_W)
VERSION_READERS = (Kind.F, Kind.B, Kind.I, Kind.W)


@dataclass(frozen=True, kw_only=True)
class StageBytes:
    """Sizes of one virtual stage."""

    weights: int
    optimizer: int
    stash: int
    activation: int


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
                optimizer=costs.optimizer_state_bytes(entry) // chunks,
                stash=entry.stash_bytes // chunks,
                activation=entry.activation_bytes,
            )
        )
    return out


def memory_plan(schedule: Schedule, costs: CostModel) -> MemoryPlan:
    sizes = stage_bytes(schedule, costs)
    base, static = [], []
    for rank, actions in enumerate(schedule.actions):
        stages = set(schedule.layout.rank_stages(rank)) | {action.stage for action in actions}
        delta = [0] * len(actions)
        start = _weights(actions, stages, sizes, delta)
        start += sum(sizes[stage].optimizer for stage in {a.stage for a in actions if a.kind is Kind.OPT})
        _transient(actions, sizes, delta)
        held, running = start, []
        for change in delta:
            held += change
            running.append(held)
        base.append(start)
        static.append(running)
    return MemoryPlan(base=base, static=static)


def version_lifetimes(actions: list[Action] | tuple[Action, ...]) -> list[tuple[int, int, int, float]]:
    """(stage, version, first position held, position after which it is released) for one rank's
    actions; version 0 is held from position -1, a version never superseded until math.inf."""
    written: dict[tuple[int, int], int] = {}
    last_read: dict[tuple[int, int], int] = {}
    stages: set[int] = set()
    for position, action in enumerate(actions):
        if action.version is None:
            continue
        if action.kind in VERSION_WRITERS:
            written.setdefault((action.stage, action.version), position)
            stages.add(action.stage)
        elif action.kind in VERSION_READERS:
            last_read[(action.stage, action.version)] = position
            stages.add(action.stage)
    lifetimes = []
    for stage in sorted(stages):
        versions = sorted({0} | {version for s, version in written if s == stage})
        for version, newer in zip(versions, [*versions[1:], None], strict=True):
            begin = written.get((stage, version), -1)
            superseded = math.inf if newer is None else written[(stage, newer)]
            lifetimes.append((stage, version, begin, max(superseded, last_read.get((stage, version), -1))))
    return lifetimes


def _weights(actions, stages: set[int], sizes: list[StageBytes], delta: list[int]) -> int:
    """Add weight-version changes to delta; return the bytes held from the start."""
    lifetimes = version_lifetimes(actions)
    covered = {stage for stage, *_ in lifetimes}
    start = sum(sizes[stage].weights for stage in stages - covered)  # stages no action versions
    for stage, _, begin, end in lifetimes:
        size = sizes[stage].weights
        if begin < 0:
            start += size
        else:
            delta[begin] += size
        if end != math.inf and end >= 0:
            delta[int(end)] -= size
    return start


def _transient(actions, sizes: list[StageBytes], delta: list[int]) -> None:
    """Gradients, stashed activations and communication buffers, in program order."""
    split = {(a.stage, a.microbatch, a.step) for a in actions if a.kind is Kind.W}
    has_grad: set[int] = set()
    received: dict[tuple, int] = {}  # what a RECV holds until its consumer runs
    for i, a in enumerate(actions):
        size, kind, stage = sizes[a.stage], a.kind, a.stage
        key = (stage, a.microbatch, a.step)
        change = 0
        if kind in (Kind.B, Kind.W) and stage not in has_grad:
            has_grad.add(stage)
            change += size.weights
        if kind is Kind.F:
            change += size.stash - received.pop((Kind.RECV_F, *key), 0)
        if kind in (Kind.B, Kind.I):
            change -= received.pop((Kind.RECV_B, *key), 0)
        if kind is Kind.W or (kind is Kind.B and key not in split):
            change -= size.stash
        if kind in (Kind.RECV_F, Kind.RECV_B):
            received[(kind, *key)] = size.activation
            change += size.activation
        if kind is Kind.RECV_G:
            received[(kind, stage)] = received.get((kind, stage), 0) + size.weights
            change += size.weights
        if kind is Kind.OPT:
            change -= received.pop((Kind.RECV_G, stage), 0)
        if kind in (Kind.OPT, Kind.SEND_G) and stage in has_grad:
            has_grad.discard(stage)
            change -= size.weights
        if kind in (Kind.SEND_F, Kind.SEND_B):
            change += size.activation
        if kind in (Kind.SEND_G, Kind.SEND_W):
            change += size.weights
        delta[i] += change


def memory_over_time(static: MemoryPlan, plan: Plan, timeline: Timeline) -> list[list[int]]:
    """memory[rank][i]: bytes held right after action i, each send's buffer freed when its transfer
    ends. A send is sampled when it is posted (its own buffer included), anything else when it ends."""
    blocking = not plan.costs.overlap
    out = []
    for rank, running in enumerate(static.static):
        classes, nbytes, ends = plan.classes[rank], plan.nbytes[rank], timeline.ends[rank]
        outstanding: list[tuple[float, int]] = []  # (transfer end, bytes) of posted sends
        freed, clock, memory = 0, 0.0, []
        for i, cls in enumerate(classes):
            if cls != SEND:
                clock = ends[i]
            while outstanding and outstanding[0][0] <= clock:
                freed += heapq.heappop(outstanding)[1]
            memory.append(running[i] - freed)
            if cls == SEND:
                heapq.heappush(outstanding, (ends[i], nbytes[i]))
                if blocking:
                    clock = ends[i]
        out.append(memory)
    return out

"""What a lowered schedule's actions mean, said once: the versions they read and write, the messages they
send and receive, how long each version is held, and which update each weight gradient joins.

    from schedules import build
    from schedules.semantics import contributions, loss_scale, stage_delays, update_sizes
    schedule = build("amdp", 4, 4, steps=3)
    update_sizes(schedule)[3]     # {1: 6, 2: 4, 3: 2}: microbatch gradients each update of stage 3 sums
    stage_delays(schedule)        # [0] * 8: every gradient is applied to the weights it was computed at
    message(schedule.layout, action)            # Message('F', 0, 1, step, 3): the same from both ends
    version_lifetimes(schedule.actions[0])      # (stage, version, held from, held until) per version

The validation, the dry run, the analytics, the simulator (plan, memory), the executor (its program, its
gradient accounting and PipeMare scaling) and the trace readers (metrics, Chrome export, calibration)
all read these; adding a kind of action or a layout means editing this module. docs/amdp.md gives the
reasoning behind the joining rule for AMDP.

Versions: a stage's version counts the updates it has seen. An F, B, I or W computes on the version it
names (READS_VERSION); after an OPT (the owner's update) or a RECV_W (a replica's copy of it) the stage
holds the version the action names (WRITES_VERSION); a SEND_W carries the version it names. Messages: a
send and its receive name the same Message, (what, sending stage, receiving stage, step, microbatch),
F/B between neighbouring stages of a pipeline, G/W between AMDP replicas and their owner.

The rule, for every schedule: a weight gradient (a B, or the W of a split backward) joins the first
update of its stage that its rank runs after it, and an update sums whatever has joined it, each
microbatch's loss multiplied by `loss_scale`. A stage's update is its OPT where the rank owns the stage
(it writes the new version), its RECV_W where the rank holds an AMDP replica: the replica hands its
gradient buffer to the owner with the SEND_G of the same update block, and that block runs no backward
between the SEND_G and the RECV_W, so the two positions give the same answer (sends are left out on
purpose: a trace lists them apart from the compute, see traces/metrics.executed_schedule).

An OVERLAP_F_B (DualPipe's overlapped pair) is a marker: the two actions right after it, a forward
and a backward (B or I) of another microbatch, run as one compute interval (schedules.costs.overlapped).
The pair starts when both halves can (`overlap_waits`); each half keeps its own meaning above, so
versions, messages and gradients need nothing new; the marker itself reads, writes and sends nothing.
Lowered, a pair keeps its halves adjacent: both receives before the marker, both sends after the pair:

    2RECV_F3 5RECV_B1 2OVERLAP_F_B3 2F3 5B1 2SEND_F3 5SEND_B1

Note: AMDP, P = 4, rank 0 (owner of stage 0, replica of stage 7 = depth 3 of pipeline 1), around update 1:

    7B3@v0 0B0@v0 0F0@s1v0 0F2@s1v0 0B2@v0 7F1@s1v0 7B1@s1v0 7F3@s1v0
    7SEND_G>3 0RECV_G>4 0OPT@v1 0SEND_W@v1>4 7RECV_W@v1>3 7B3@s1v1 0B0@s1v1 ..

    stage 0: 0B0, 0B2 (step 0)              join 0OPT@v1         (depth 0's update to v1)
    stage 7: 7B3 (step 0), 7B1@s1 (step 1)   join 7RECV_W@v1>3    (depth 3's update to v1, stage 3's OPT)
    7B3@s1v1, 0B0@s1v1 run after it and join the updates to v2: every gradient meets the weights it read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

from schedules.ir import MATCHING, WEIGHT_GRAD_KINDS, Action, Kind, Layout, Schedule, Versioning

READS_VERSION = frozenset({Kind.F, Kind.B, Kind.I, Kind.W})
"""Kinds that compute on the weight version they name."""
WRITES_VERSION = frozenset({Kind.OPT, Kind.RECV_W})
"""Kinds after which their stage holds the version they name (an update, or a replica's copy of one)."""
CARRIES_VERSION = frozenset({Kind.SEND_W})
"""Kinds that send the version they name."""
OVERLAP_KINDS = frozenset({Kind.F})
"""What an overlapped pair's first half is (the marker names it: same stage, microbatch and step)."""
OVERLAP_PARTNERS = frozenset({Kind.B, Kind.I})
"""What its second half may be: a backward that frees the previous stage."""


class Message(NamedTuple):
    """One point-to-point transfer, named the same from its send and from its receive."""

    kind: str
    """'F' activation, 'B' input gradient, 'G' a replica's weight gradient, 'W' updated weights."""
    src: int
    """Sending stage."""
    dst: int
    """Receiving stage."""
    step: int
    microbatch: int | None


_MESSAGES = {
    # kind -> (what, this end sends, the other end: "next" or "prev" stage of the pipeline, or the peer)
    Kind.SEND_F: ("F", True, "next"),
    Kind.RECV_F: ("F", False, "prev"),
    Kind.SEND_B: ("B", True, "prev"),
    Kind.RECV_B: ("B", False, "next"),
    Kind.SEND_G: ("G", True, "peer"),
    Kind.RECV_G: ("G", False, "peer"),
    Kind.SEND_W: ("W", True, "peer"),
    Kind.RECV_W: ("W", False, "peer"),
}


def peer_stage(layout: Layout, action: Action) -> int | None:
    """The stage at the other end of a send or receive (None for compute, or off the pipeline's ends)."""
    entry = _MESSAGES.get(action.kind)
    if entry is None:
        return None
    other = entry[2]
    if other == "next":
        return layout.next_stage(action.stage)
    if other == "prev":
        return layout.prev_stage(action.stage)
    return action.peer


def peer_rank(layout: Layout, action: Action) -> int | None:
    """The rank at the other end of a send or receive (None where there is no such stage)."""
    stage = peer_stage(layout, action)
    return None if stage is None or not 0 <= stage < layout.num_stages else layout.placement[stage]


def message(layout: Layout, action: Action) -> Message | None:
    """The message a send sends or a receive waits for: equal for the two ends of one transfer; None for
    compute, or for a send or receive whose other end is off the pipeline."""
    entry = _MESSAGES.get(action.kind)
    if entry is None:
        return None
    other = peer_stage(layout, action)
    if other is None:
        return None
    src, dst = (action.stage, other) if entry[1] else (other, action.stage)
    return Message(entry[0], src, dst, action.step, action.microbatch)


def counterpart(layout: Layout, action: Action) -> tuple | None:
    """The key (Action.key) of the action at the other end of a send or receive: what it waits for or
    feeds. None for compute, or off the pipeline's ends."""
    entry = _MESSAGES.get(action.kind)
    other = peer_stage(layout, action)
    if entry is None or other is None:
        return None
    kind = MATCHING[action.kind]
    peer = action.stage if entry[2] == "peer" else None
    return (other, kind, action.microbatch, action.step, peer)


def version_lifetimes(actions: list[Action] | tuple[Action, ...]) -> list[tuple[int, int, int, float]]:
    """(stage, version, first position held, position after which it is released) for one rank's
    actions: a version is held from the action that writes it (version 0 from position -1) until it is
    superseded and read for the last time, whichever is later (math.inf for the last one)."""
    last_read = {
        (a.stage, a.version): i
        for i, a in enumerate(actions)
        if a.kind in READS_VERSION and a.version is not None
    }
    written: dict[tuple[int, int], int] = {}
    for i, a in enumerate(actions):
        if a.kind in WRITES_VERSION and a.version is not None:
            written.setdefault((a.stage, a.version), i)
    stages = {stage for stage, _ in last_read} | {stage for stage, _ in written}
    lifetimes = []
    for stage in sorted(stages):
        versions = sorted({0} | {version for s, version in written if s == stage})
        for version, newer in zip(versions, [*versions[1:], None], strict=True):
            begin = written.get((stage, version), -1)
            superseded = math.inf if newer is None else written[(stage, newer)]
            lifetimes.append((stage, version, begin, max(superseded, last_read.get((stage, version), -1))))
    return lifetimes


def overlap_pairs(actions: list[Action] | tuple[Action, ...]) -> list[tuple[int, int, int]]:
    """(marker, forward, backward) positions of every OVERLAP_F_B pair of one rank's actions: the two
    actions right after a marker are its halves (schedules.graph.validate checks that they are the
    forward it names and a backward)."""
    marker = Kind.OVERLAP_F_B
    return [(i, i + 1, i + 2) for i, action in enumerate(actions) if action.kind is marker]


def overlap_problem(actions: list[Action] | tuple[Action, ...], position: int) -> str | None:
    """What is wrong with the pair whose marker is at `position` (None if it is well formed)."""
    mark = actions[position]
    halves = actions[position + 1 : position + 3]
    if len(halves) < 2:
        return f"{mark} is not followed by its forward and a backward"
    forward, backward = halves
    named = (mark.stage, mark.microbatch, mark.step)
    if forward.kind not in OVERLAP_KINDS or (forward.stage, forward.microbatch, forward.step) != named:
        return f"{mark} must be followed by its forward {Action(mark.stage, Kind.F, *named[1:])}"
    if backward.kind not in OVERLAP_PARTNERS:
        return f"{mark} pairs {forward} with {backward}, which is not a backward (B or I)"
    return None


def overlap_waits(schedule: Schedule) -> dict[tuple, tuple[Action, Action]]:
    """Marker key -> its (forward, backward): the pair waits for what either half waits for."""
    found = {}
    for actions in schedule.actions:
        for marker, forward, backward in overlap_pairs(actions):
            if backward < len(actions):
                found[actions[marker].key] = (actions[forward], actions[backward])
    return found


class Contribution(NamedTuple):
    """One weight-gradient action of a rank and the update that applies its gradient."""

    rank: int
    position: int
    """Index of the action in the rank's action list."""
    action: Action
    """The B or W; its version is the one the gradient was computed at (None before lowering)."""
    applier: int
    """The stage whose OPT applies the gradient: the action's own stage, or an AMDP replica's owner."""
    version: int | None
    """The version that update writes; None when no update of the stage follows (never applied)."""

    @property
    def delay(self) -> int | None:
        """tau: updates between the weights the gradient was computed at and those it is applied to."""
        if self.version is None or self.action.version is None:
            return None
        return self.version - 1 - self.action.version


def contributions(schedule: Schedule) -> list[Contribution]:
    """Every weight-gradient action of the schedule with the update it joins (rank by rank, in order)."""
    return list(map(Contribution._make, _joins(schedule)))


def _joins(schedule: Schedule) -> list[tuple[int, int, Action, int, int | None]]:
    """The rule, once: (rank, position, gradient, applier, version written) per weight gradient, as
    plain tuples (Contribution's fields) for the callers that only count."""
    found: list[tuple[int, int, Action, int, int | None]] = []
    grads, opt, recv_w = WEIGHT_GRAD_KINDS, Kind.OPT, Kind.RECV_W
    relevant = WEIGHT_GRAD_KINDS | {opt, recv_w}
    for rank, actions in enumerate(schedule.actions):
        waiting: dict[int, list[tuple[int, Action]]] = {}  # stage -> gradients not applied yet
        for position, action in [(p, a) for p, a in enumerate(actions) if a.kind in relevant]:
            kind = action.kind
            if kind in grads:
                pending = waiting.get(action.stage)
                if pending is None:
                    waiting[action.stage] = [(position, action)]
                else:
                    pending.append((position, action))
            else:  # an update: OPT on the owner, RECV_W on a replica
                applier = action.stage if kind is opt else action.peer
                version = action.version
                found += [
                    (rank, index, grad, applier, version) for index, grad in waiting.pop(action.stage, ())
                ]
        for stage_waiting in waiting.values():
            found += [(rank, index, grad, grad.stage, None) for index, grad in stage_waiting]
    return found


def appliers(schedule: Schedule) -> list[int]:
    """Per stage: the stage whose OPT updates it (itself, or an AMDP replica's owner)."""
    result = list(range(schedule.num_stages))
    recv_w = Kind.RECV_W
    for actions in schedule.actions:
        for action in actions:
            if action.kind is recv_w and action.peer is not None:
                result[action.stage] = action.peer
    return result


def update_sizes(schedule: Schedule) -> dict[int, dict[int, int]]:
    """Applying stage -> {version written: microbatch gradients its update sums}, all replicas included."""
    sizes: dict[int, dict[int, int]] = defaultdict(dict)
    for contribution in contributions(schedule):
        if contribution.version is not None:
            per_update = sizes[contribution.applier]
            per_update[contribution.version] = per_update.get(contribution.version, 0) + 1
    return {stage: dict(sorted(per_update.items())) for stage, per_update in sorted(sizes.items())}


def stage_delays(schedule: Schedule) -> list[int]:
    """Per stage: the largest tau over the updates it receives, (version written - 1) - version read.

    A replica receives its owner's updates, so all replicas of one depth report the same delay (what
    PipeMare's learning-rate scaling of the owner's optimizer needs, too).
    """
    per_applier: dict[int, int] = defaultdict(int)
    for _, _, grad, applier, version in _joins(schedule):
        if version is not None and grad.version is not None:  # Contribution.delay, without the object
            delay = version - 1 - grad.version
            if delay > per_applier[applier]:
                per_applier[applier] = delay
    return [per_applier[applier] for applier in appliers(schedule)]


def loss_scale(schedule: Schedule) -> float:
    """What each microbatch's loss is multiplied by before its backward.

    1/m where an update sums a step's m microbatches, 1 where every microbatch is its own update
    (STASH). AMDP keeps 1/m even for its first and last updates, which sum more and fewer gradients:
    the authors' code divides every microbatch's loss by m (docs/amdp.md).
    """
    per_update = 1 if schedule.versioning is Versioning.STASH else schedule.microbatches
    return 1.0 / per_update

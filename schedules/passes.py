"""Lowering passes: small pure functions from a compute-only schedule to the one that runs.

    lower(schedule) = add_comms(assign_versions(insert_optimizer_steps(schedule)))

Each pass returns a new Schedule and leaves actions it does not own untouched, so passes compose and
rerunning one is harmless.

Note: where optimizer steps go, by versioning (w: a weight-gradient action, B or W):

    FLUSH, DOUBLE_BUFFER   ... w(s, j=m-1) OPT(s) ...   one update per stage per step, after its last w
    STASH                  ... w(s, j) OPT(s) ...        one update per microbatch (PipeDream)
    CURRENT                placed by the generator (AMDP puts it inside the next step's first round)
"""

from __future__ import annotations

from schedules.ir import SEND_KINDS, WEIGHT_GRAD_KINDS, Action, Kind, Schedule, Versioning
from schedules.semantics import CARRIES_VERSION, READS_VERSION, WRITES_VERSION


def lower(schedule: Schedule) -> Schedule:
    """All passes in order: optimizer steps, weight versions, then sends and receives."""
    return add_comms(assign_versions(insert_optimizer_steps(schedule)))


def insert_optimizer_steps(schedule: Schedule) -> Schedule:
    """Add OPT actions where the schedule's versioning puts them (no-op if it already has them)."""
    if schedule.versioning is Versioning.CURRENT or _has_kind(schedule, (Kind.OPT,)):
        return schedule
    per_microbatch = schedule.versioning is Versioning.STASH
    return schedule.with_actions(
        [_with_optimizer_steps(actions, per_microbatch) for actions in schedule.actions]
    )


def _has_kind(schedule: Schedule, kinds: tuple[Kind, ...]) -> bool:
    return any(action.kind in kinds for actions in schedule.actions for action in actions)


def _with_optimizer_steps(actions: tuple[Action, ...], per_microbatch: bool) -> list[Action]:
    """One rank's actions with an OPT after every weight gradient (per_microbatch) or after the last
    one of each (stage, step), and after the sends right behind it when the schedule has its sends
    already (a comm-lowered CSV): where lowering a compute-only schedule puts it."""
    opt = Kind.OPT
    if per_microbatch:
        out: list[Action] = []
        for action in actions:
            out.append(action)
            if action.kind in WEIGHT_GRAD_KINDS:
                out.append(Action(action.stage, opt, action.microbatch, action.step))
        return out
    last_grad = {}  # (stage, step) -> index of its last weight-gradient action (and of its sends)
    for index, action in enumerate(actions):
        if action.kind in WEIGHT_GRAD_KINDS:
            last_grad[(action.stage, action.step)] = index
    for key, index in last_grad.items():  # the sends right behind it, if the schedule has its sends
        while index + 1 < len(actions) and actions[index + 1].kind in SEND_KINDS:
            if (actions[index + 1].stage, actions[index + 1].step) != key:
                break
            index += 1
        last_grad[key] = index
    out, done = [], 0
    for index in sorted(last_grad.values()):  # copy the runs between updates whole
        out += actions[done : index + 1]
        out.append(Action(actions[index].stage, opt, None, actions[index].step))
        done = index + 1
    out += actions[done:]
    return out


def assign_versions(schedule: Schedule) -> Schedule:
    """Set the weight version every action reads (F/B/I/W) or writes (OPT, RECV_W) or carries (SEND_W).

    A stage's version counts the updates it has seen: an OPT on the owner, a RECV_W on a replica.
    FLUSH and CURRENT read the current version, STASH reads the current one at the forward and the
    stashed one after it, DOUBLE_BUFFER reads W(max(0, step - 1)) (docs/schedules.md, PipeDream-2BW).
    """
    versioning = schedule.versioning
    return schedule.with_actions([_with_versions(versioning, actions) for actions in schedule.actions])


_new = tuple.__new__  # builds an Action from its six fields without NamedTuple's argument handling


def _with_versions(versioning: Versioning, actions: tuple[Action, ...]) -> list[Action]:
    """One rank's actions with versions; an action that already has its version is kept as it is."""
    current: dict[int, int] = {}
    stashed: dict[tuple[int, int | None, int], int] = {}
    out = []
    readers, writers, carriers = READS_VERSION, WRITES_VERSION, CARRIES_VERSION  # schedules.semantics
    double_buffer = versioning is Versioning.DOUBLE_BUFFER
    stash = versioning is Versioning.STASH
    for action in actions:
        stage, kind, microbatch, step, old, peer = action
        if kind in readers:
            if double_buffer:
                version = step - 1 if step > 0 else 0
            elif stash:
                version = _stash(kind, (stage, microbatch, step), current.get(stage, 0), stashed)
            else:
                version = current.get(stage, 0)
        elif kind in writers:
            version = current[stage] = current.get(stage, 0) + 1
        elif kind in carriers:
            version = current.get(stage, 0)
        else:
            version = None
        out.append(action if old == version else _new(Action, (*action[:4], version, peer)))
    return out


def _stash(kind: Kind, key: tuple[int, int | None, int], now: int, stashed: dict) -> int:
    """PipeDream: the forward reads the current version and stashes it; its backwards read the stash."""
    if kind is Kind.F:
        stashed[key] = now
    return stashed.get(key, now)


def add_comms(schedule: Schedule) -> Schedule:
    """Add SEND_F/RECV_F and SEND_B/RECV_B where neighbouring stages live on different ranks.

    A send goes right after the action that produced the tensor; a receive right before the action
    that consumes it (sends are asynchronous, so this order cannot deadlock if the compute order does
    not). No-op if the schedule already has them.
    """
    if _has_kind(schedule, (Kind.SEND_F, Kind.SEND_B)):
        return schedule
    layout = schedule.layout
    placement = layout.placement

    def remote(stage: int | None, other: int) -> bool:
        return stage is not None and placement[stage] != placement[other]

    stages = range(layout.num_stages)
    # per stage: whether its input comes from / its output goes to another rank
    remote_prev = [remote(layout.prev_stage(stage), stage) for stage in stages]
    remote_next = [remote(layout.next_stage(stage), stage) for stage in stages]
    lower_rank = _with_comms_overlapped if _has_kind(schedule, (Kind.OVERLAP_F_B,)) else _with_comms
    return schedule.with_actions(
        [lower_rank(actions, remote_prev, remote_next) for actions in schedule.actions]
    )


def _with_comms_overlapped(
    actions: tuple[Action, ...], remote_prev: list[bool], remote_next: list[bool]
) -> list[Action]:
    """_with_comms for a rank with OVERLAP_F_B pairs: a pair's two receives go before its marker and its
    two sends after its backward, so the halves stay adjacent (schedules/semantics.py)."""
    out: list[Action] = []
    position = 0
    while position < len(actions):
        action = actions[position]
        if action.kind is Kind.OVERLAP_F_B:
            pair = actions[position + 1 : position + 3]
            lowered = [_with_comms((half,), remote_prev, remote_next) for half in pair]
            halves = [lowered_half.index(half) for lowered_half, half in zip(lowered, pair, strict=True)]
            out += [a for part, at in zip(lowered, halves, strict=True) for a in part[:at]]
            out += [action, *pair]
            out += [a for part, at in zip(lowered, halves, strict=True) for a in part[at + 1 :]]
            position += 1 + len(pair)
        else:
            out += _with_comms((action,), remote_prev, remote_next)
            position += 1
    return out


def _with_comms(
    actions: tuple[Action, ...], remote_prev: list[bool], remote_next: list[bool]
) -> list[Action]:
    out: list[Action] = []
    append = out.append
    forward, backward, input_grad = Kind.F, Kind.B, Kind.I
    recv_f, send_f, recv_b, send_b = Kind.RECV_F, Kind.SEND_F, Kind.RECV_B, Kind.SEND_B
    for action in actions:
        stage, kind, j, step = action[:4]
        if kind is forward:
            if remote_prev[stage]:
                append(_new(Action, (stage, recv_f, j, step, None, None)))
            append(action)
            if remote_next[stage]:
                append(_new(Action, (stage, send_f, j, step, None, None)))
        elif kind is backward or kind is input_grad:
            if remote_next[stage]:
                append(_new(Action, (stage, recv_b, j, step, None, None)))
            append(action)
            if remote_prev[stage]:
                append(_new(Action, (stage, send_b, j, step, None, None)))
        else:
            append(action)
    return out

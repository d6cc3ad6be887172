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

from schedules.ir import WEIGHT_GRAD_KINDS, Action, Kind, Schedule, Versioning


def lower(schedule: Schedule) -> Schedule:
    """All passes in order: optimizer steps, weight versions, then sends and receives."""
    return add_comms(assign_versions(insert_optimizer_steps(schedule)))


def insert_optimizer_steps(schedule: Schedule) -> Schedule:
    """Add OPT actions where the schedule's versioning puts them (no-op if it already has them)."""
    if schedule.versioning is Versioning.CURRENT or any(
        action.kind is Kind.OPT for _, action in schedule.all_actions()
    ):
        return schedule
    per_microbatch = schedule.versioning is Versioning.STASH
    lowered = []
    for actions in schedule.actions:
        last_grad = {}  # (stage, step) -> index of its last weight-gradient action
        for index, action in enumerate(actions):
            if action.kind in WEIGHT_GRAD_KINDS:
                last_grad[(action.stage, action.step)] = index
        out: list[Action] = []
        for index, action in enumerate(actions):
            out.append(action)
            if action.kind not in WEIGHT_GRAD_KINDS:
                continue
            if per_microbatch or last_grad[(action.stage, action.step)] == index:
                microbatch = action.microbatch if per_microbatch else None
                out.append(Action(action.stage, Kind.OPT, microbatch, action.step))
        lowered.append(out)
    return schedule.with_actions(lowered)


def assign_versions(schedule: Schedule) -> Schedule:
    """Set the weight version every action reads (F/B/I/W) or writes (OPT, RECV_W) or carries (SEND_W).

    A stage's version counts the updates it has seen: an OPT on the owner, a RECV_W on a replica.
    FLUSH and CURRENT read the current version, STASH reads the current one at the forward and the
    stashed one after it, DOUBLE_BUFFER reads W(max(0, step - 1)) (docs/schedules.md, PipeDream-2BW).
    """
    lowered = []
    for actions in schedule.actions:
        current: dict[int, int] = {}
        stashed: dict[tuple[int, int | None, int], int] = {}
        out = []
        for action in actions:
            version = _version_of(schedule.versioning, action, current, stashed)
            out.append(action._replace(version=version))
        lowered.append(out)
    return schedule.with_actions(lowered)


def _version_of(
    versioning: Versioning,
    action: Action,
    current: dict[int, int],
    stashed: dict[tuple[int, int | None, int], int],
) -> int | None:
    stage, kind = action.stage, action.kind
    now = current.get(stage, 0)
    if kind in (Kind.OPT, Kind.RECV_W):
        current[stage] = now + 1
        return now + 1
    if kind is Kind.SEND_W:
        return now
    if kind not in (Kind.F, Kind.B, Kind.I, Kind.W):
        return None
    if versioning is Versioning.DOUBLE_BUFFER:
        return max(0, action.step - 1)
    if versioning is Versioning.STASH:
        key = (stage, action.microbatch, action.step)
        if kind is Kind.F:
            stashed[key] = now
        return stashed.get(key, now)
    return now


def add_comms(schedule: Schedule) -> Schedule:
    """Add SEND_F/RECV_F and SEND_B/RECV_B where neighbouring stages live on different ranks.

    A send goes right after the action that produced the tensor; a receive right before the action
    that consumes it (sends are asynchronous, so this order cannot deadlock if the compute order does
    not). No-op if the schedule already has them.
    """
    if any(action.kind in (Kind.SEND_F, Kind.SEND_B) for _, action in schedule.all_actions()):
        return schedule
    layout = schedule.layout
    placement = layout.placement

    def remote(stage: int | None, other: int) -> bool:
        return stage is not None and placement[stage] != placement[other]

    lowered = []
    for actions in schedule.actions:
        out: list[Action] = []
        for action in actions:
            stage, j, step = action.stage, action.microbatch, action.step
            if action.kind is Kind.F and remote(layout.prev_stage(stage), stage):
                out.append(Action(stage, Kind.RECV_F, j, step))
            if action.kind in (Kind.B, Kind.I) and remote(layout.next_stage(stage), stage):
                out.append(Action(stage, Kind.RECV_B, j, step))
            out.append(action)
            if action.kind is Kind.F and remote(layout.next_stage(stage), stage):
                out.append(Action(stage, Kind.SEND_F, j, step))
            if action.kind in (Kind.B, Kind.I) and remote(layout.prev_stage(stage), stage):
                out.append(Action(stage, Kind.SEND_B, j, step))
        lowered.append(out)
    return schedule.with_actions(lowered)

"""schedules/passes.py's lowering on columns, the three passes fused into one: optimizer steps, weight
versions, sends and receives.

    lowered = lower_columns(compute_columns("2bw", 1024, 8192))     # == columns_of(build("2bw", ...))

It lowers what simulator/columnar/generate.py's closed forms produce: compute actions only, one pipeline,
one stage per rank, every backward after its forward. Each compute action becomes a short run, and every
field of the result is written once:

    [RECV_F] F [SEND_F]            RECV_F where the previous stage is on another rank, SEND_F the next
    [RECV_B] B|I [SEND_B] [OPT]    OPT after the stage's last weight gradient of a step (STASH: every one)
    W [OPT]

Versions follow the passes' rules: a stage's version counts the OPTs before the action (an OPT writes
that count plus one); DOUBLE_BUFFER reads max(0, step - 1); STASH's backwards read their forward's.
tests/simulator/test_columnar.py checks the result against the IR's passes for every such schedule.
"""

from __future__ import annotations

import numpy as np

from schedules.ir import Versioning
from simulator.columnar.columns import (
    NONE,
    OPT,
    RECV_B,
    RECV_F,
    SEND_B,
    SEND_F,
    B,
    Columns,
    F,
    I,
    W,
    is_kind,
    with_arrays,
)


def lower_columns(columns: Columns) -> Columns:
    """insert_optimizer_steps, assign_versions and add_comms of schedules/passes.py, in one pass."""
    layout = columns.layout
    if layout.pipelines != 1 or layout.placement != tuple(range(layout.ranks)):
        raise ValueError("lower_columns takes one stage per rank (the closed-form schedules)")
    if not is_kind(columns.kind, F, B, I, W).all():
        raise ValueError("lower_columns takes compute-only columns")
    kind = columns.kind
    opt_after = _optimizer_steps(columns)
    updates = _count_per_rank(columns, opt_after)  # OPTs up to and including each action's own
    version = _read_versions(columns, updates - opt_after)
    forward, backward = kind == F, (kind == B) | (kind == I)
    remote_prev, remote_next = _remote_neighbours(columns)
    prev, nxt = remote_prev[columns.stage], remote_next[columns.stage]
    recv_before = (forward & prev) | (backward & nxt)
    send_after = (forward & nxt) | (backward & prev)
    after = send_after.astype(np.int64) + opt_after
    moved = np.arange(len(columns)) + np.cumsum(recv_before) + np.cumsum(after) - after
    grown = np.cumsum(recv_before + after)  # actions added up to and including each one
    bounds = columns.offsets
    offsets = bounds + np.where(bounds > 0, grown[np.maximum(bounds - 1, 0)], 0)
    total = int(offsets[-1])
    out = {name: np.empty(total, dtype=getattr(columns, name).dtype) for name in ("kind", "stage", "step")}
    out |= {name: np.full(total, NONE, dtype=np.int32) for name in ("microbatch", "version", "peer")}
    receive, send = moved[recv_before] - 1, moved[send_after] + 1
    optimizer = moved[opt_after] + 1 + send_after[opt_after]
    stash = columns.versioning is Versioning.STASH
    out["version"][moved] = version
    for name in ("kind", "stage", "microbatch", "step"):
        source = getattr(columns, name)
        out[name][moved] = source
        if name != "kind":  # a send, receive or OPT carries its action's stage, step and microbatch
            out[name][receive] = source[recv_before]
            out[name][send] = source[send_after]
            if name != "microbatch" or stash:  # only PipeDream's OPT names a microbatch
                out[name][optimizer] = source[opt_after]
    out["kind"][receive] = np.where(forward, RECV_F, RECV_B)[recv_before]
    out["kind"][send] = np.where(forward, SEND_F, SEND_B)[send_after]
    out["kind"][optimizer] = OPT
    out["version"][optimizer] = updates[opt_after]
    return with_arrays(columns, offsets, **out)


def _optimizer_steps(columns: Columns) -> np.ndarray:
    """Whether an OPT follows each action: every weight gradient (STASH), else the last of each (stage,
    step); none for CURRENT."""
    grads = (columns.kind == B) | (columns.kind == W)
    if columns.versioning is Versioning.STASH:
        return grads
    after = np.zeros(len(columns), dtype=bool)
    if columns.versioning is Versioning.CURRENT:
        return after
    where = np.flatnonzero(grads)
    key = columns.stage[where].astype(np.int64) * columns.steps + columns.step[where]
    last = np.full(columns.num_stages * columns.steps, -1, dtype=np.int64)
    np.maximum.at(last, key, where)
    after[last[last >= 0]] = True
    return after


def _count_per_rank(columns: Columns, flags: np.ndarray) -> np.ndarray:
    """How many flags are set on the action's rank up to and including it."""
    seen = np.cumsum(flags, dtype=np.int64)
    starts = columns.offsets[:-1]
    before = np.where(starts > 0, seen[np.maximum(starts - 1, 0)], 0)
    return seen - np.repeat(before, np.diff(columns.offsets))


def _read_versions(columns: Columns, now: np.ndarray) -> np.ndarray:
    """The version each compute action reads, given the updates of its stage before it (`now`)."""
    if columns.versioning is Versioning.DOUBLE_BUFFER:
        return np.maximum(columns.step - 1, 0).astype(np.int32)
    if columns.versioning is not Versioning.STASH:
        return now.astype(np.int32)
    # a forward reads the current version and stashes it; its backwards read the stash
    key = (columns.stage.astype(np.int64) * columns.steps + columns.step) * columns.microbatches
    key += columns.microbatch
    forwards = columns.kind == F
    stash = np.zeros(columns.num_stages * columns.steps * columns.microbatches, dtype=np.int64)
    stash[key[forwards]] = now[forwards]
    return np.where(forwards, now, stash[key]).astype(np.int32)


def _remote_neighbours(columns: Columns) -> tuple[np.ndarray, np.ndarray]:
    """Per stage: whether the previous / the next stage of its pipeline lives on another rank."""
    layout = columns.layout
    placement = layout.placement
    stages = range(layout.num_stages)
    prev = [(p := layout.prev_stage(s)) is not None and placement[p] != placement[s] for s in stages]
    nxt = [(n := layout.next_stage(s)) is not None and placement[n] != placement[s] for s in stages]
    return np.array(prev, dtype=bool), np.array(nxt, dtype=bool)

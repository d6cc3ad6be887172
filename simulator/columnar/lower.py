"""schedules/passes.py's lowering on columns: optimizer steps, weight versions, sends and receives.

    lowered = lower_columns(compute_columns("2bw", 1024, 8192))     # == columns_of(build("2bw", ...))

The same three passes in the same order, each a handful of whole-array operations. They lower what
simulator/columnar/generate.py's closed forms produce: one pipeline, one stage per rank, every backward
after its forward on the rank (tests/simulator/test_columnar.py checks the result against the IR's
passes for every such schedule). Any other schedule is lowered in the IR and then converted.
"""

from __future__ import annotations

import numpy as np

from schedules.ir import Versioning
from simulator.columnar.columns import (
    NONE,
    OPT,
    RECV_B,
    RECV_F,
    RECV_W,
    SEND_B,
    SEND_F,
    SEND_W,
    B,
    Columns,
    F,
    I,
    W,
    with_arrays,
)


def lower_columns(columns: Columns) -> Columns:
    """insert_optimizer_steps, assign_versions, add_comms (schedules/passes.py)."""
    layout = columns.layout
    if layout.pipelines != 1 or layout.placement != tuple(range(layout.ranks)):
        raise ValueError("lower_columns takes one stage per rank (the closed-form schedules)")
    return add_comms(assign_versions(insert_optimizer_steps(columns)))


def insert_optimizer_steps(columns: Columns) -> Columns:
    """An OPT after every weight gradient (STASH) or after the last one of each (stage, step)."""
    if columns.versioning is Versioning.CURRENT or bool(np.any(columns.kind == OPT)):
        return columns
    grads = np.flatnonzero((columns.kind == B) | (columns.kind == W))
    after = np.zeros(len(columns), dtype=bool)
    if columns.versioning is Versioning.STASH:
        after[grads] = True
    else:
        key = columns.stage[grads].astype(np.int64) * columns.steps + columns.step[grads]
        last = np.full(columns.num_stages * columns.steps, -1, dtype=np.int64)
        np.maximum.at(last, key, grads)
        after[last[last >= 0]] = True
    microbatch = columns.microbatch if columns.versioning is Versioning.STASH else None
    return insert(columns, after=(after, np.int8(OPT), microbatch))


def assign_versions(columns: Columns) -> Columns:
    """The version each F/B/I/W reads and each OPT writes: a stage's version counts its updates so far."""
    kind = columns.kind
    writes = (kind == OPT) | (kind == RECV_W)
    # updates of the rank's (single) stage up to and including each action
    seen = np.cumsum(writes, dtype=np.int64)
    starts = columns.offsets[:-1]
    before_rank = np.where(starts > 0, seen[np.maximum(starts - 1, 0)], 0)
    seen -= np.repeat(before_rank, np.diff(columns.offsets))
    now = seen - writes  # updates strictly before the action
    reads = (kind == F) | (kind == B) | (kind == I) | (kind == W)
    version = np.full(len(columns), NONE, dtype=np.int64)
    version[writes] = seen[writes]
    version[kind == SEND_W] = now[kind == SEND_W]
    if columns.versioning is Versioning.DOUBLE_BUFFER:
        version[reads] = np.maximum(columns.step[reads].astype(np.int64) - 1, 0)
    elif columns.versioning is Versioning.STASH:
        version[reads] = _stashed(columns, now, reads)
    else:
        version[reads] = now[reads]
    return with_arrays(columns, columns.offsets, **{**_fields(columns), "version": version.astype(np.int32)})


def _stashed(columns: Columns, now: np.ndarray, reads: np.ndarray) -> np.ndarray:
    """PipeDream: a forward reads the current version and stashes it; its backwards read the stash."""
    key = (columns.stage.astype(np.int64) * columns.steps + columns.step) * columns.microbatches
    key += columns.microbatch
    forwards = columns.kind == F
    stash = np.zeros(columns.num_stages * columns.steps * columns.microbatches, dtype=np.int64)
    stash[key[forwards]] = now[forwards]
    return np.where(forwards, now, stash[np.where(reads, key, 0)])[reads]


def add_comms(columns: Columns) -> Columns:
    """RECV_F before a forward and SEND_F after it where the neighbour lives elsewhere; RECV_B before
    a backward for inputs (B or I) and SEND_B after it."""
    kind = columns.kind
    if bool(np.any((kind == SEND_F) | (kind == SEND_B))):
        return columns
    layout = columns.layout
    stages = range(layout.num_stages)
    placement = layout.placement
    remote_prev = np.array(
        [(p := layout.prev_stage(s)) is not None and placement[p] != placement[s] for s in stages]
    )
    remote_next = np.array(
        [(n := layout.next_stage(s)) is not None and placement[n] != placement[s] for s in stages]
    )
    forward, backward = kind == F, (kind == B) | (kind == I)
    prev, nxt = remote_prev[columns.stage], remote_next[columns.stage]
    before = ((forward & prev) | (backward & nxt), np.where(forward, RECV_F, RECV_B).astype(np.int8))
    after = ((forward & nxt) | (backward & prev), np.where(forward, SEND_F, SEND_B).astype(np.int8))
    return insert(columns, before=(*before, columns.microbatch), after=(*after, columns.microbatch))


Insertion = tuple[np.ndarray, np.ndarray | np.int8, np.ndarray | None]
"""(where: bool per action, kind code(s), microbatch per action or None for none)."""


def insert(columns: Columns, *, before: Insertion | None = None, after: Insertion | None = None) -> Columns:
    """New actions right before and/or after the marked ones, with the marked action's stage and step,
    no version and no peer."""
    n = len(columns)
    if n == 0:
        return columns
    none = (np.zeros(n, dtype=bool), np.int8(0), None)
    before, after = before or none, after or none
    added_before = np.cumsum(before[0], dtype=np.int64)  # inserted at or before i
    added_after = np.cumsum(after[0], dtype=np.int64) - after[0]  # inserted after actions before i
    moved = np.arange(n, dtype=np.int64) + added_before + added_after
    inserted = added_before + added_after + after[0]  # new actions among actions 0..i
    total = n + int(inserted[-1])
    fields = _fields(columns)
    out = {name: np.full(total, NONE, dtype=array.dtype) for name, array in fields.items()}
    for name, array in fields.items():
        out[name][moved] = array
    for offset, (where, kind, microbatch) in ((-1, before), (1, after)):
        target = moved[where] + offset
        out["kind"][target] = kind if np.ndim(kind) == 0 else kind[where]
        out["stage"][target] = columns.stage[where]
        out["step"][target] = columns.step[where]
        if microbatch is not None:
            out["microbatch"][target] = microbatch[where]
    bounds = columns.offsets
    offsets = bounds + np.where(bounds > 0, inserted[np.maximum(bounds - 1, 0)], 0)
    return with_arrays(columns, offsets, **out)


def _fields(columns: Columns) -> dict[str, np.ndarray]:
    return {
        name: getattr(columns, name) for name in ("kind", "stage", "microbatch", "step", "version", "peer")
    }

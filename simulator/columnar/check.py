"""schedules.graph.validate on columns: the same checks, in the same order, as whole-array operations.

    check_columns(columns)        # None, or ScheduleError naming the first problem as validate() does

Checked in validate()'s order: placement, duplicates, missing or foreign compute, completeness, matching
sends and receives, backward after forward, weight versions. The deadlock check is the engine's own:
simulate_columns raises the engine's deadlock error for a schedule that cannot finish.

A problem in a schedule of up to SMALL actions is reported by validate() itself (headline and the marked
grid); beyond, the headline alone, the same words (tests/simulator/test_columnar.py checks both on a
table of broken schedules).
"""

from __future__ import annotations

import numpy as np

from schedules.graph import validate
from schedules.ir import MATCHING, Action, Kind, ScheduleError, Versioning
from simulator.columnar.columns import (
    KINDS,
    OPT,
    RECV_B,
    RECV_F,
    RECV_G,
    RECV_W,
    SEND_B,
    SEND_F,
    SEND_G,
    SEND_W,
    B,
    Columns,
    F,
    I,
    W,
    is_kind,
)

SMALL = 200_000
"""Up to this many actions, a problem is reported by validate() with its picture."""
COMPUTE = (F, B, I, W)
PEER_KINDS = (SEND_G, RECV_G, SEND_W, RECV_W)


class _Problem(Exception):
    """The first problem found: its headline."""


def check_columns(columns: Columns, *, small: int = SMALL) -> None:
    """Raise ScheduleError at the first problem validate() would name; return None if there is none."""
    rank = columns.rank_of()
    try:
        for check in (_placement, _duplicates, _expected, _complete, _comms, _order, _versions):
            check(columns, rank)
    except _Problem as problem:
        if len(columns) <= small:
            validate(columns.to_schedule())  # the same headline, with the marked grid
        raise ScheduleError(str(problem)) from None


def _first(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def _placement(columns: Columns, rank: np.ndarray) -> None:
    stage = columns.stage
    outside = (stage < 0) | (stage >= columns.num_stages)
    placement = np.array(columns.layout.placement, dtype=np.int64)
    elsewhere = ~outside & (placement[np.where(outside, 0, stage)] != rank)
    index = _first(outside | elsewhere)
    if index is None:
        return
    action, where = columns.action(index), int(rank[index])
    if outside[index]:
        raise _Problem(f"{action} on rank {where} names stage {action.stage}, which is not there")
    owner = placement[action.stage]
    raise _Problem(f"{action} runs on rank {where}, but stage {action.stage} lives on rank {owner}")


def _duplicates(columns: Columns, rank: np.ndarray) -> None:
    """Action.key = (stage, kind, microbatch, step, peer) at most once; every stage lives on one rank
    now, so a key can only repeat within a rank."""
    found: list[tuple[int, int]] = []  # (index of a repeat, index of its first occurrence)
    held: list[list[int]] = [[] for _ in range(columns.ranks)]
    for stage, owner in enumerate(columns.layout.placement):
        held[owner].append(stage)
    local = np.zeros(columns.num_stages, dtype=np.int64)  # a stage's index among its rank's stages
    for stages in held:
        local[stages] = np.arange(len(stages))
    peer_kind = is_kind(columns.kind, *PEER_KINDS)
    microbatch, step = columns.microbatch.astype(np.int64) + 1, columns.step.astype(np.int64)
    step = step - min(0, int(step.min(initial=0)))
    kinds, microbatches, steps = len(KINDS), int(microbatch.max(initial=0)) + 1, int(step.max(initial=0)) + 1
    key = ((local[columns.stage] * kinds + columns.kind) * microbatches + microbatch) * steps + step
    for owner in range(columns.ranks):
        span = columns.span(owner)
        keys, plain = key[span], ~peer_kind[span]
        at = np.flatnonzero(plain)
        first = np.full(len(held[owner]) * kinds * microbatches * steps, span.stop)
        np.minimum.at(first, keys[at], at)
        repeat = _first(first[keys[at]] != at)
        if repeat is not None:
            found.append((span.start + int(at[repeat]), span.start + int(first[keys[at[repeat]]])))
            break
    seen: dict[Action, int] = {}
    for index in np.flatnonzero(peer_kind).tolist():
        key_of = columns.action(index)._replace(version=None)
        if key_of in seen:
            found.append((index, seen[key_of]))
            break
        seen[key_of] = index
    if found:
        index, first_index = min(found)
        action, where = columns.action(index), int(rank[index])
        owner = int(rank[first_index])
        position = first_index - int(columns.offsets[owner])
        first = f"first at rank {owner}, position {position}"
        raise _Problem(f"{action} on rank {where} is a duplicate ({first})")


def _expected(columns: Columns, rank: np.ndarray) -> None:
    layout, microbatch, step = columns.layout, columns.microbatch, columns.step
    pipeline = columns.stage // layout.stages_per_pipeline
    wrong = is_kind(columns.kind, *COMPUTE) & (
        (microbatch < 0)
        | (microbatch >= columns.microbatches)
        | (step < 0)
        | (step >= columns.steps)
        | (microbatch % layout.pipelines != pipeline)
    )
    index = _first(wrong)
    if index is not None:
        raise _Problem(
            f"{columns.action(index)} on rank {int(rank[index])} is not part of this schedule's work"
        )


def _grid_index(columns: Columns, where: np.ndarray) -> np.ndarray:
    """(step, microbatch, depth) of compute actions, flattened in validate's order."""
    spp = columns.layout.stages_per_pipeline
    depth = columns.stage[where] % spp
    return (
        columns.step[where].astype(np.int64) * columns.microbatches + columns.microbatch[where]
    ) * spp + depth


def _complete(columns: Columns, rank: np.ndarray) -> None:
    """Every stage runs F and (B, or I and W) for every microbatch of its pipeline in every step."""
    spp, pipelines = columns.layout.stages_per_pipeline, columns.layout.pipelines
    size = columns.steps * columns.microbatches * spp
    present = {}
    for code in COMPUTE:
        where = columns.kind == code
        present[code] = np.zeros(size, dtype=bool)
        present[code][_grid_index(columns, where)] = True
    forward, full, split_i, split_w = (present[code] for code in COMPUTE)
    missing_forward = ~forward
    both = forward & full & (split_i | split_w)
    lacking = forward & ~full & ~(split_i & split_w)
    index = _first(missing_forward | both | lacking)
    if index is None:
        return
    step, rest = divmod(index, columns.microbatches * spp)
    microbatch, depth = divmod(rest, spp)
    stage = (microbatch % pipelines) * spp + depth
    name = Action(stage, Kind.F, microbatch, step)
    if missing_forward[index]:
        raise _Problem(f"missing forward {name}")
    if both[index]:
        raise _Problem(f"{name}: stage {stage} runs both a full backward and a split one")
    what = "W" if split_i[index] else "I" if split_w[index] else "B (or I and W)"
    raise _Problem(f"missing backward {what} for {name} on stage {stage}")


def _comms(columns: Columns, rank: np.ndarray) -> None:
    """Every receive has its matching send and every send its receive."""
    layout, kind, stage = columns.layout, columns.kind, columns.stage
    low = min(0, int(columns.step.min(initial=0)))
    microbatches = int(columns.microbatch.max(initial=0)) + 2
    steps = int(columns.step.max(initial=0)) + 1 - low
    stages = columns.num_stages
    prev = np.array([-1 if (p := layout.prev_stage(s)) is None else p for s in range(stages)])
    nxt = np.array([-1 if (n := layout.next_stage(s)) is None else n for s in range(stages)])
    where = {code: np.flatnonzero(kind == code) for code in (SEND_F, RECV_F, SEND_B, RECV_B)}
    # cell of (stage, step, microbatch): the same for a send and its receive, once the stage is shifted
    tail = {
        code: (columns.step[at].astype(np.int64) - low) * microbatches + columns.microbatch[at] + 1
        for code, at in where.items()
    }
    present = {}
    for code, at in where.items():
        present[code] = np.zeros(stages * steps * microbatches, dtype=bool)
        present[code][stage[at].astype(np.int64) * steps * microbatches + tail[code]] = True
    bad = np.zeros(len(columns), dtype=bool)
    for code, other, neighbour in (
        (RECV_F, SEND_F, prev),
        (RECV_B, SEND_B, nxt),
        (SEND_F, RECV_F, nxt),
        (SEND_B, RECV_B, prev),
    ):
        peer = neighbour[stage[where[code]]]
        cell = np.maximum(peer, 0) * steps * microbatches + tail[code]
        bad[where[code]] = (peer < 0) | ~present[other][cell]
    bad |= _peer_comms(columns)
    index = _first(bad)
    if index is not None:
        action = columns.action(index)
        raise _Problem(f"{action} on rank {int(rank[index])} has no matching {MATCHING[action.kind]}")


def _peer_comms(columns: Columns) -> np.ndarray:
    """AMDP's gradient and weight messages: SEND_x(s)>p matches RECV_x(p)>s, same microbatch and step."""
    bad = np.zeros(len(columns), dtype=bool)
    where = np.flatnonzero(is_kind(columns.kind, *PEER_KINDS)).tolist()
    keys = {columns.action(index)._replace(version=None) for index in where}
    for index in where:
        action = columns.action(index)
        if action.peer is None:
            bad[index] = True
            continue
        other = Action(action.peer, MATCHING[action.kind], action.microbatch, action.step, None, action.stage)
        bad[index] = other not in keys
    return bad


def _order(columns: Columns, rank: np.ndarray) -> None:
    """On its own rank, a backward comes after its forward and a W after its I (each exists now)."""
    kind, size = columns.kind, columns.steps * columns.microbatches * columns.layout.stages_per_pipeline
    where_of: dict[int, np.ndarray] = {}
    for code in (F, I):
        where = np.flatnonzero(kind == code)
        where_of[code] = np.full(size, len(columns), dtype=np.int64)
        where_of[code][_grid_index(columns, where)] = where
    bad = np.zeros(len(columns), dtype=bool)
    for codes, before in (((B, I), F), ((W,), I)):
        where = np.flatnonzero(is_kind(kind, *codes))
        bad[where] = where_of[before][_grid_index(columns, where)] > where
    index = _first(bad)
    if index is None:
        return
    action = columns.action(index)
    needed = Kind.I if action.kind is Kind.W else Kind.F
    name = Action(action.stage, needed, action.microbatch, action.step)
    what = "its input backward" if needed is Kind.I else "its forward"
    raise _Problem(f"{action} on rank {int(rank[index])} comes before {what} {name}")


def _versions(columns: Columns, rank: np.ndarray) -> None:
    """Every version read or written follows the schedule's Versioning rule (graph._check_versions):
    an OPT writes one more than the stage's last written version, a compute action reads its step
    (FLUSH), max(0, step - 1) (DOUBLE_BUFFER), the current version (CURRENT) or its forward's (STASH)."""
    kind, versioning = columns.kind, columns.versioning
    compute = np.flatnonzero(is_kind(kind, *COMPUTE) & (columns.version >= 0))
    opts = np.flatnonzero(kind == OPT)
    # (index, expected) pairs; the first index whose version differs is the problem
    asked = [(opts, _current(columns, opts) + 1)]
    step = columns.step[compute].astype(np.int64)
    if versioning is Versioning.FLUSH:
        asked.append((compute, step))
    elif versioning is Versioning.DOUBLE_BUFFER:
        asked.append((compute, np.maximum(step - 1, 0)))
    elif versioning is Versioning.CURRENT:
        asked.append((compute, _current(columns, compute)))
    else:
        asked.append((compute, _stashed(columns, compute)))
    first, expected = None, 0
    for where, wanted in asked:
        version = columns.version[where]
        bad = _first((version >= 0) & (wanted >= 0) & (version != wanted))
        if bad is not None and (first is None or where[bad] < first):
            first, expected = int(where[bad]), int(wanted[bad])
    if first is not None:
        action, rule = columns.action(first), versioning.value
        raise _Problem(
            f"{action} on rank {int(rank[first])} has version {action.version}, "
            f"but the {rule} rule gives {expected}"
        )


def _current(columns: Columns, where: np.ndarray) -> np.ndarray:
    """The stage's version before each action at `where` (sorted): the last version an OPT or RECV_W
    of the same stage wrote before it, 0 before any."""
    writes = np.flatnonzero(is_kind(columns.kind, OPT, RECV_W) & (columns.version >= 0))
    if writes.size == 0 or where.size == 0:
        return np.zeros(where.size, dtype=np.int64)
    stage = columns.stage
    if not columns.stages_contiguous:  # several stages per rank: look per stage
        key = np.concatenate([where, writes])  # an OPT asked about sorts before its own write
        order = np.lexsort((key, stage[key]))
        is_write = np.zeros(key.size, dtype=bool)
        is_write[where.size :] = True
        is_write = is_write[order]
        last = np.maximum.accumulate(np.where(is_write, np.arange(key.size), -1))
        last = np.concatenate([[-1], last[:-1]])
        ordered = key[order]
        found = (last >= 0) & (stage[ordered[np.maximum(last, 0)]] == stage[ordered])
        now = np.where(found, columns.version[ordered[np.maximum(last, 0)]], 0)
        result = np.empty(key.size, dtype=np.int64)
        result[order] = now
        return result[: where.size]
    # every stage's actions are contiguous: the last write before an action is its stage's or none
    last = np.searchsorted(writes, where) - 1
    previous = writes[np.maximum(last, 0)]
    found = (last >= 0) & (stage[previous] == stage[where])
    return np.where(found, columns.version[previous], 0).astype(np.int64)


def _stashed(columns: Columns, where: np.ndarray) -> np.ndarray:
    """STASH: a forward must read the current version, its backwards the version the forward read (no
    rule before the forward has run or where it read none: -1)."""
    forwards = np.flatnonzero(columns.kind == F)
    size = columns.steps * columns.microbatches * columns.layout.stages_per_pipeline
    at = np.full(size, len(columns), dtype=np.int64)
    at[_grid_index(columns, forwards)] = forwards
    forward = at[_grid_index(columns, where)]
    read = columns.version.astype(np.int64)[np.minimum(forward, len(columns) - 1)]
    stashed = np.where(forward < where, read, -1)
    return np.where(columns.kind[where] == F, _current(columns, where), stashed)

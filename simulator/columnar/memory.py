"""simulator/memory.py on columns: bytes held after every action, with send buffers freed on time.

    held = memory_columns(columns, costs, plan, ends)     # int64 per action, flat like the columns

The same rules (weights per version held, gradient buffers, optimizer state, stashed activations,
buffers; see simulator/memory.py), counted with whole-array operations on schedules whose every stage
lives on one rank (validated ones). tests/simulator/test_columnar.py checks every value against
memory_over_time(memory_plan(...)).

Note: a send's buffer is freed at the first later action of its rank whose clock has reached the end
of the transfer. The clock an action looks at never decreases along a rank, so that action is found by
a binary search:

    clock  = end of the action, or for a send the clock before it (overlapped sends leave it alone)
    freed  = first i > send with clock[i] >= end[send]
"""

from __future__ import annotations

import numpy as np

from simulator.columnar.columns import (
    CODE,
    KINDS,
    OPT,
    RECV_G,
    SEND_G,
    B,
    Columns,
    W,
)
from simulator.columnar.plan import ColumnPlan
from simulator.columnar.staleness import version_cells
from simulator.costs import CostModel
from simulator.memory import _constants, stage_bytes
from simulator.plan import SEND


def memory_columns(columns: Columns, costs: CostModel, plan: ColumnPlan, ends: np.ndarray) -> np.ndarray:
    """Bytes held right after each action (memory_over_time of memory_plan)."""
    static = static_memory(columns, costs)
    return _free_sends(columns, plan, ends, static)


def static_memory(columns: Columns, costs: CostModel) -> np.ndarray:
    """memory_plan(...).static, flat: bytes after each action with every send buffer still held."""
    schedule = columns.header()
    sizes = stage_bytes(schedule, costs)
    table = np.zeros(columns.num_stages * len(KINDS), dtype=np.int64)
    for stage, per_kind in enumerate(_constants(schedule, sizes)):
        for kind, size in per_kind.items():
            table[stage * len(KINDS) + CODE[kind]] = size
    delta = table[columns.stage * np.int32(len(KINDS)) + columns.kind]
    weights = np.array([size.weights for size in sizes], dtype=np.int64)
    base = _weights(columns, weights, delta)
    updated = _gradients(columns, weights, delta)
    rank_of = np.array(columns.layout.placement, dtype=np.int64)
    optimizer = np.array([size.optimizer for size in sizes], dtype=np.int64)
    np.add.at(base, rank_of[updated], optimizer[updated])
    held = np.cumsum(delta, out=delta)
    before = np.where(columns.offsets[:-1] > 0, held[np.maximum(columns.offsets[:-1] - 1, 0)], 0)
    for rank in range(columns.ranks):  # in place, rank by rank: no second array of that size
        held[columns.span(rank)] += base[rank] - before[rank]
    return held


def _weights(columns: Columns, weights: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Add each weight version's allocation and release to delta (simulator.memory._weights); return
    per rank the bytes held from the start."""
    stage, begin, release, has_release, named = version_cells(columns)
    size = weights[stage]
    np.add.at(delta, begin[begin >= 0], size[begin >= 0])
    np.subtract.at(delta, release[has_release], size[has_release])
    placement = np.array(columns.layout.placement, dtype=np.int64)
    base = np.zeros(columns.ranks, dtype=np.int64)
    np.add.at(base, placement[stage[begin < 0]], size[begin < 0])
    unnamed = ~named  # stages no versioned action names: their weights are held throughout
    np.add.at(base, placement[unnamed], weights[unnamed])
    return base


def _gradients(columns: Columns, weights: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Gradient buffers (simulator.memory._stateful): a stage's first B/W after an update allocates,
    its OPT or SEND_G frees; an OPT also frees the RECV_G buffers since the stage's last OPT. Returns
    the stages that run an OPT."""
    kind = columns.kind
    grads = (kind == B) | (kind == W)
    clears = (kind == OPT) | (kind == SEND_G)
    events = np.flatnonzero(grads | clears)
    stage = columns.stage[events].astype(np.int64)
    if not columns.stages_contiguous:  # several stages per rank: take each stage's events in order
        order = np.argsort(stage, kind="stable")
        events, stage = events[order], stage[order]
    is_grad, is_clear = grads[events], clears[events]
    segment = np.cumsum(is_clear) - is_clear  # clears before each event: one gradient buffer's life
    last_grad = np.maximum.accumulate(np.where(is_grad, np.arange(events.size), -1))
    previous = np.concatenate([[-1], last_grad[:-1]])
    prev = np.maximum(previous, 0)
    open_buffer = (previous >= 0) & (stage[prev] == stage) & (segment[prev] == segment)
    allocate = is_grad & ~open_buffer
    free = is_clear & open_buffer
    np.add.at(delta, events[allocate], weights[stage[allocate]])
    np.subtract.at(delta, events[free], weights[stage[free]])
    _received_gradients(columns, weights, delta)
    return np.unique(columns.stage[kind == OPT])


def _received_gradients(columns: Columns, weights: np.ndarray, delta: np.ndarray) -> None:
    """An OPT frees the RECV_G buffers its stage received since its previous OPT (AMDP's owners)."""
    kind = columns.kind
    received = np.flatnonzero(kind == RECV_G)
    if received.size == 0:
        return
    owners = set(columns.stage[received].tolist())
    events = np.flatnonzero(((kind == RECV_G) | (kind == OPT)) & np.isin(columns.stage, list(owners)))
    waiting: dict[int, int] = {}
    for index in events.tolist():
        stage = int(columns.stage[index])
        if kind[index] == RECV_G:
            waiting[stage] = waiting.get(stage, 0) + int(weights[stage])
        else:
            delta[index] -= waiting.pop(stage, 0)


def _free_sends(columns: Columns, plan: ColumnPlan, ends: np.ndarray, static: np.ndarray) -> np.ndarray:
    """memory_over_time: subtract each send's buffer from the first later action whose clock reached
    the end of its transfer."""
    send = plan.classes == SEND
    ticks = ~send if plan.costs.overlap else np.ones(len(columns), dtype=bool)
    freed = np.zeros(len(columns) + 1, dtype=np.int64)
    for rank in range(columns.ranks):
        span = columns.span(rank)
        low = span.start
        tick = ticks[span]
        last = np.maximum.accumulate(np.where(tick, np.arange(tick.size), -1))
        after = np.where(last >= 0, ends[span][np.maximum(last, 0)], 0.0)  # clock after each action
        before = np.concatenate([[0.0], after[:-1]])
        clock = np.where(send[span], before, ends[span])  # what each action compares against
        sends = np.flatnonzero(send[span])
        first = np.maximum(np.searchsorted(clock, ends[span][sends], side="left"), sends + 1)
        keep = first < tick.size
        np.add.at(freed, low + first[keep], plan.nbytes(low + sends[keep]))
    gone = np.cumsum(freed[:-1], out=freed[:-1])
    before = np.where(columns.offsets[:-1] > 0, gone[np.maximum(columns.offsets[:-1] - 1, 0)], 0)
    for rank in range(columns.ranks):  # in place, rank by rank
        span = columns.span(rank)
        static[span] -= gone[span] - before[rank]
    return static

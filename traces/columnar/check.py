"""traces.io.check_events on columns: whether a trace passes, as whole-array operations.

    if not passes(columns, header, complete=True):
        ...  # traces.io runs check_events on the Events, which names the first problem

Only the verdict is computed here. A trace that fails is rare and then read the slow way, so the message
is always check_events' own, word for word; what must hold is that `passes` says True exactly when
check_events raises nothing (tests/traces/test_columnar.py checks both on a table of broken traces).
"""

from __future__ import annotations

import numpy as np

from schedules.ir import Kind
from traces.columnar.columns import KIND_CODE, NONE, STREAM_OF_KIND, EventColumns
from traces.schema import ScheduleHeader


def passes(columns: EventColumns, header: ScheduleHeader, *, complete: bool) -> bool:
    """What check_events checks: times finite, end >= start, sorted by start; each event on the rank of
    its stage and in the stream of its kind; and with `complete`, every forward and backward of the
    schedule exactly once."""
    return (
        _times(columns)
        and _placed(columns, header)
        and bool(np.array_equal(STREAM_OF_KIND[columns.kind], columns.stream))
        and (not complete or _complete(columns, header))
    )


def _times(columns: EventColumns) -> bool:
    """previous start <= start <= end < inf for every event (NaN fails every comparison)."""
    start, end = columns.start, columns.end
    return bool(np.all(start[:-1] <= start[1:]) and np.all(start <= end) and np.all(end < np.inf))


def _placed(columns: EventColumns, header: ScheduleHeader) -> bool:
    placement = np.array(header.placement, dtype=np.int64)
    if int(columns.stage.max()) >= placement.size:
        return False
    return bool(np.array_equal(placement[columns.stage], columns.rank))


def _complete(columns: EventColumns, header: ScheduleHeader) -> bool:
    """No forward or backward twice; every (stage, step, microbatch) of the schedule has its forward,
    and its backward (B, or I and W)."""
    layout = header.layout
    stages, steps, microbatches = layout.num_stages, max(header.steps, 0), max(header.microbatches, 0)
    if layout.pipelines < 1 or stages * steps * microbatches > len(columns) * layout.pipelines:
        return False  # more (stage, step, microbatch) than a complete trace of this size can have
    compute = [KIND_CODE[kind] for kind in (Kind.F, Kind.B, Kind.I, Kind.W)]
    where = np.flatnonzero(np.isin(columns.kind, compute))
    stage, step = columns.stage[where], columns.step[where]
    microbatch, kind = columns.microbatch[where], columns.kind[where].astype(np.int64)
    if _repeats(stage, kind, microbatch, step):
        return False
    inside = (step < steps) & (microbatch != NONE) & (microbatch < microbatches)
    found = np.zeros((len(compute), stages, steps, microbatches), dtype=bool)
    position = np.searchsorted(compute, kind[inside])  # compute is sorted: F, B, I, W in KINDS order
    found[position, stage[inside], step[inside], microbatch[inside]] = True
    forward, backward, inputs, weights = found
    needed = (
        np.arange(microbatches)[None, :] % layout.pipelines
        == (np.arange(stages) // layout.stages_per_pipeline)[:, None]
    )  # stage s runs the microbatches of its pipeline: layout.pipeline(s) = s // depth
    done = forward & (backward | (inputs & weights))
    return bool(np.all(done | ~needed[:, None, :]))


def _repeats(stage: np.ndarray, kind: np.ndarray, microbatch: np.ndarray, step: np.ndarray) -> bool:
    """Whether two compute events name the same (stage, kind, microbatch, step)."""
    order = np.lexsort((step, microbatch, kind, stage))
    fields = [column[order] for column in (stage, kind, microbatch, step)]
    same = np.ones(max(order.size - 1, 0), dtype=bool)
    for column in fields:
        same &= column[1:] == column[:-1]
    return bool(same.any())

"""What traces.metrics reads off the Events, read off the columns instead, to the bit.

    counted = column_counts(columns, header)   # traces.metrics.Counted's fields; None: count on the Events

Floats are combined in the order the Event path combines them: busy time per rank is a running sum in
trace order (np.cumsum adds one after the other, as the loop does; np.sum would pair them up and round
differently), and minima and maxima are exact either way. The one thing an array reduction cannot
promise is which of two equal zeros it keeps, so a trace with a time of -0.0 is counted on the Events.
"""

from __future__ import annotations

from itertools import pairwise
from statistics import median
from typing import Any

import numpy as np

from schedules.ir import Kind
from traces.columnar import staleness
from traces.columnar.columns import STREAM_CODE, EventColumns
from traces.schema import ScheduleHeader


def column_counts(columns: EventColumns, header: ScheduleHeader) -> dict[str, Any] | None:
    """The fields of traces.metrics.Counted, from the columns of a checked trace (None: count them on
    the Events)."""
    if columns.signed_zero():
        return None
    versions, mismatches = staleness.weight_versions(columns, header), staleness.mismatches(columns, header)
    if versions is None or mismatches is None:
        return None
    origin, last = float(columns.start.min()), float(columns.end.max())
    per_stage, per_rank = staleness.peak_activations(columns, header)
    return dict(
        origin=origin,
        end=last,
        busy=busy_per_rank(columns, header.ranks),
        step_time=_step_time(columns, header.steps, origin, last),
        peak_memory=_peak_memory(columns, header.ranks),
        peak_activations=per_stage,
        peak_activations_per_rank=per_rank,
        weight_versions=versions,
        delay=staleness.delays(columns, header),
        mismatches=mismatches,
    )


def busy_per_rank(columns: EventColumns, ranks: int) -> list[float]:
    """Per rank: end - start of its compute events, added up one after the other in trace order."""
    compute = np.flatnonzero(columns.stream == STREAM_CODE["compute"])
    rank, duration = columns.rank[compute], columns.end[compute] - columns.start[compute]
    order = np.argsort(rank, kind="stable")
    rank, duration = rank[order], duration[order]
    bounds = np.searchsorted(rank, np.arange(ranks + 1)).tolist()
    return [float(np.cumsum(duration[low:high])[-1]) if high > low else 0.0 for low, high in pairwise(bounds)]


def _step_time(columns: EventColumns, steps: int, origin: float, last: float) -> float:
    """schedules.analytics.steady_step_time: the median of the differences of the steps' last F/B/I/W."""
    if steps < 2:
        return last - origin
    computed = np.flatnonzero(columns.is_kind(Kind.F, Kind.B, Kind.I, Kind.W) & (columns.step < steps))
    step_end = np.full(steps, origin)
    np.maximum.at(step_end, columns.step[computed], columns.end[computed])
    finished = step_end.tolist()
    return median(finished[k] - finished[k - 1] for k in range(1, steps))


def _peak_memory(columns: EventColumns, ranks: int) -> list[int | None]:
    recorded = np.flatnonzero(columns.recorded)
    rank = columns.rank[recorded]
    peaks = np.full(ranks, np.iinfo(np.int64).min)
    np.maximum.at(peaks, rank, columns.memory[recorded])
    seen = np.bincount(rank, minlength=ranks) > 0
    return [peak if held else None for peak, held in zip(peaks.tolist(), seen.tolist(), strict=True)]

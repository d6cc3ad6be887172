"""traces.compare's per-kind table and order check on columns: the same rows and differences as on Events.

    totals = kind_totals(columns, kind_group, KIND_GROUPS)   # {(rank, group): (count, seconds)}
    first_differences(columns_a, columns_b, ranks)           # [(rank, position, A's action, B's action)]

The executed order of a rank (traces.metrics.executed_schedule) is its compute and receive events in
trace order, then its sends in trace order: one stable sort by (rank, is a send) gives it for all ranks.
Durations are added one after the other in trace order, as traces.compare does on Events.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from schedules.ir import Action
from traces.columnar.columns import KINDS, STREAM_CODE, EventColumns

ACTION_FIELDS = ("stage", "kind", "microbatch", "step", "version", "peer")
"""What makes two actions equal (Action's fields)."""


def kind_totals(
    columns: EventColumns, group: Callable[[Action], str], groups: tuple[str, ...]
) -> dict[tuple[int, str], tuple[int, float]]:
    """(rank, kind group) -> (events, seconds of end - start summed in trace order); `group` names the
    group of an action, one of `groups` (traces.compare.kind_group, KIND_GROUPS)."""
    group_of = np.array([groups.index(group(Action(0, kind))) for kind in KINDS], dtype=np.int64)
    key = columns.rank * len(groups) + group_of[columns.kind]
    order = np.argsort(key, kind="stable")
    key, duration = key[order], (columns.end - columns.start)[order]
    found, begins = np.unique(key, return_index=True)
    ends = np.append(begins[1:], key.size)
    totals = {}
    for code, low, high in zip(found.tolist(), begins.tolist(), ends.tolist(), strict=True):
        rank, group = divmod(code, len(groups))
        totals[(rank, groups[group])] = (high - low, float(np.cumsum(duration[low:high])[-1]))
    return totals


def executed(columns: EventColumns, ranks: int) -> tuple[np.ndarray, list[int]]:
    """(event indices in executed order, rank by rank; where each rank's run begins, ranks + 1 of them)."""
    sends = columns.stream == STREAM_CODE["send"]
    order = np.argsort(columns.rank * 2 + sends, kind="stable")
    bounds = np.searchsorted(columns.rank[order], np.arange(ranks + 1)).tolist()
    return order, bounds


def first_differences(
    a: EventColumns, b: EventColumns, ranks: int
) -> list[tuple[int, int, str | None, str | None]]:
    """Per rank whose executed orders differ: (rank, first position where they do, A's action there, B's
    action there), None where a rank's list has ended."""
    (order_a, bounds_a), (order_b, bounds_b) = executed(a, ranks), executed(b, ranks)
    fields_a = [getattr(a, name)[order_a] for name in ACTION_FIELDS]
    fields_b = [getattr(b, name)[order_b] for name in ACTION_FIELDS]
    found = []
    for rank in range(ranks):
        low_a, low_b = bounds_a[rank], bounds_b[rank]
        length_a, length_b = bounds_a[rank + 1] - low_a, bounds_b[rank + 1] - low_b
        common = min(length_a, length_b)
        differ = np.zeros(common, dtype=bool)
        for x, y in zip(fields_a, fields_b, strict=True):
            differ |= x[low_a : low_a + common] != y[low_b : low_b + common]
        if differ.any():
            position = int(np.argmax(differ))
        elif length_a != length_b:
            position = common
        else:
            continue
        texts = [
            str(columns.action(int(order[low + position]))) if position < length else None
            for columns, order, low, length in ((a, order_a, low_a, length_a), (b, order_b, low_b, length_b))
        ]
        found.append((rank, position, *texts))
    return found

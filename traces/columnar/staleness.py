"""schedules/analytics.py's counts on a trace's columns: in-flight activations, weight versions held,
delay per stage and mismatches, as traces.metrics computes them on the executed order of its Events.

    per_stage, per_rank = peak_activations(columns, header)
    weight_versions(columns, header), delays(columns, header), mismatches(columns, header)

What makes whole-array operations possible: a checked trace runs each stage on one rank (the rank of its
stage, traces.io.check_events), and the executed order of a rank (traces.metrics.executed_schedule) is
its compute and receive events in trace order, then its sends; every action counted here is a compute or
a receive. So a stage's actions in trace order are its actions in executed order, and anything counted
per stage is counted on the stage's run of events; the position of an event in the trace stands for its
position on its rank. Unlike the simulator's columns (simulator/columnar/staleness.py), a trace need not
be a valid schedule (a run that stopped early may repeat or lack actions, versions may be missing), so
nothing here assumes one (keys are sorted, never laid out on a grid). Where packing a key would not fit
in 62 bits, a function returns None and traces.metrics counts on the Events.
"""

from __future__ import annotations

import numpy as np

from schedules.ir import Kind
from traces.columnar.columns import KIND_CODE, NONE, EventColumns
from traces.schema import ScheduleHeader

_FITS = 2**62


def _runs(group: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """group and values reordered so that each group's entries form one run, in their order."""
    order = np.argsort(group, kind="stable")
    return tuple(array[order] for array in (group, *values))


def _last(keys: np.ndarray) -> np.ndarray:
    """(distinct keys sorted, index of each one's last occurrence)."""
    distinct, first_from_end = np.unique(keys[::-1], return_index=True)
    return distinct, keys.size - 1 - first_from_end


def _per_chunk(counts: list[int], chunks: int) -> list[float]:
    return list(counts) if chunks == 1 else [count / chunks for count in counts]


def peak_activations(columns: EventColumns, header: ScheduleHeader) -> tuple[list[float], list[float]]:
    """(per stage, per rank) most microbatches between a forward and its B or I, divided by chunks."""
    where = np.flatnonzero(columns.is_kind(Kind.F, Kind.B, Kind.I))
    change = np.where(columns.kind[where] == KIND_CODE[Kind.F], 1, -1)
    per_stage = _grouped_peaks(columns.stage[where], change, len(header.placement))
    per_rank = _grouped_peaks(columns.rank[where], change, header.ranks)
    return _per_chunk(per_stage, header.chunks), _per_chunk(per_rank, header.chunks)


def _grouped_peaks(group: np.ndarray, change: np.ndarray, groups: int) -> list[int]:
    """Per group, the highest running sum of `change` over its entries in order (0 if never above)."""
    group, change = _runs(group, change)
    running = np.cumsum(change)
    begins = np.flatnonzero(np.diff(group, prepend=-1))
    before = np.where(begins > 0, running[np.maximum(begins - 1, 0)], 0)
    running -= np.repeat(before, np.diff(np.append(begins, group.size)))
    peaks = np.zeros(groups, dtype=np.int64)
    np.maximum.at(peaks, group, running)
    return peaks.tolist()


def weight_versions(columns: EventColumns, header: ScheduleHeader) -> list[int] | None:
    """Per stage: most versions held at once (schedules.semantics.version_lifetimes: a version from
    the action that writes it until it is superseded and read for the last time; at one position, a
    release before a write)."""
    stages, events = len(header.placement), len(columns)
    named = columns.version != NONE
    writes = np.flatnonzero(named & columns.is_kind(Kind.OPT, Kind.RECV_W))
    reads = np.flatnonzero(named & columns.is_kind(Kind.F, Kind.B, Kind.I, Kind.W))
    base = int(columns.version[named].max(initial=0)) + 1
    if stages * base >= _FITS:
        return None
    written, first_write = np.unique(_cell(columns, writes, base), return_index=True)
    read, last_read = _last(_cell(columns, reads, base))
    first_write, last_read = writes[first_write], reads[last_read]
    cells = np.union1d(written, np.union1d(written // base, read // base) * base)  # and version 0
    stage = cells // base
    begin = _lookup(written, first_write, cells, -1)
    newer = np.append(stage[1:] == stage[:-1], False)  # a newer version of the stage is written
    superseded = np.append(begin[1:], -1)
    release = np.where(newer, np.maximum(superseded, _lookup(read, last_read, cells, -1)), events)
    span = events + 2  # positions shifted by one: -1 (held from the start) is 0
    opens, closes = stage * span + begin + 1, np.sort(stage * span + release + 1)
    order = np.argsort(opens)
    opens, owner = opens[order], stage[order]
    opened = np.arange(opens.size) - np.searchsorted(opens, owner * span) + 1
    closed = np.searchsorted(closes, opens, side="right") - np.searchsorted(closes, owner * span)
    result = np.ones(stages, dtype=np.int64)
    np.maximum.at(result, owner, opened - closed)
    return result.tolist()


def _cell(columns: EventColumns, where: np.ndarray, base: int) -> np.ndarray:
    return columns.stage[where] * base + columns.version[where]


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray, missing: int) -> np.ndarray:
    """values[key] for each wanted key in the sorted `keys`; `missing` where it is not there."""
    at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    found = keys[at] == wanted if keys.size else np.zeros(wanted.size, dtype=bool)
    return np.where(found, values[at] if keys.size else missing, missing)


def delays(columns: EventColumns, header: ScheduleHeader) -> list[int]:
    """Per stage: the largest tau over the updates it receives (schedules.semantics.stage_delays): a
    weight gradient joins the first update of its stage (OPT, or an AMDP replica's RECV_W) after it."""
    where = np.flatnonzero(columns.is_kind(Kind.B, Kind.W, Kind.OPT, Kind.RECV_W))
    group, where = _runs(columns.stage[where], where)
    kind = columns.kind[where]
    updates = (kind == KIND_CODE[Kind.OPT]) | (kind == KIND_CODE[Kind.RECV_W])
    last = where.size
    following = np.minimum.accumulate(np.where(updates, np.arange(last), last)[::-1])[::-1]
    target = np.minimum(following, max(last - 1, 0))
    joined = ~updates & (following < last) & (group[target] == group)
    grad, update = where[joined], where[target[joined]]
    written, read = columns.version[update], columns.version[grad]
    opt = columns.kind[update] == KIND_CODE[Kind.OPT]
    applier = np.where(opt, columns.stage[update], columns.peer[update])
    known = (written != NONE) & (read != NONE)  # an update without its peer counts for no stage
    found, inverse = np.unique(applier[known], return_inverse=True)
    largest = np.zeros(found.size, dtype=np.int64)  # per applier, as the defaultdict(int) of stage_delays
    np.maximum.at(largest, inverse, (written - 1 - read)[known])
    per_applier = dict(zip(found.tolist(), largest.tolist(), strict=True))
    return [per_applier.get(applier, 0) for applier in _appliers(columns, len(header.placement))]


def _appliers(columns: EventColumns, stages: int) -> list[int]:
    """Per stage: the stage whose OPT updates it, the peer of its last RECV_W (an AMDP replica)."""
    result = list(range(stages))
    where = np.flatnonzero(columns.is_kind(Kind.RECV_W) & (columns.peer != NONE))
    stage, last = _last(columns.stage[where])
    for index, peer in zip(stage.tolist(), columns.peer[where[last]].tolist(), strict=True):
        result[index] = peer
    return result


def mismatches(columns: EventColumns, header: ScheduleHeader) -> list[int] | None:
    """Per stage: (stage, microbatch, step) whose forward and last weight gradient (B, or W) read
    different versions (the last forward of a key counts, as in schedules.analytics.mismatches)."""
    forwards = np.flatnonzero(columns.is_kind(Kind.F))
    grads = np.flatnonzero(columns.is_kind(Kind.B, Kind.W))
    microbatches = int(columns.microbatch.max(initial=0)) + 2  # None (-1) packs as 0
    steps = int(columns.step.max(initial=0)) + 1
    if len(header.placement) * microbatches * steps >= _FITS:
        return None

    def key(where: np.ndarray) -> np.ndarray:
        stage, microbatch, step = (
            column[where] for column in (columns.stage, columns.microbatch, columns.step)
        )
        return (stage * microbatches + microbatch + 1) * steps + step

    forward_keys, forward_last = _last(key(forwards))
    grad_keys, grad_last = _last(key(grads))
    forward = _lookup(forward_keys, columns.version[forwards[forward_last]], grad_keys, NONE)
    backward = columns.version[grads[grad_last]]
    differ = (forward != NONE) & (backward != NONE) & (forward != backward)
    stage = grad_keys[differ] // (microbatches * steps)
    return np.bincount(stage, minlength=len(header.placement)).tolist()

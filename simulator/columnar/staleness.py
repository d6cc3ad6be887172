"""schedules/analytics.py's staleness counts on columns: in-flight activations, weight versions held,
delay per stage and mismatches.

    per_stage, per_rank = peak_activations(columns)
    weight_versions(columns), delays(columns), mismatches(columns)

The same rules as schedules/analytics.py and schedules/semantics.py (which update a gradient joins),
counted with whole-array operations on validated schedules, where every stage lives on one rank and every
(stage, microbatch, step) has one forward and one weight gradient. tests/simulator/test_columnar.py
checks every count against the IR functions on every schedule.
"""

from __future__ import annotations

import numpy as np

from simulator.columnar.columns import OPT, RECV_W, B, Columns, F, I, W

READERS = (F, B, I, W)
WRITERS = (OPT, RECV_W)


def peak_activations(columns: Columns) -> tuple[list[float], list[float]]:
    """(per stage, per rank) most microbatches between a forward and its B or I, divided by chunks."""
    where = columns.where(F, B, I)
    change = np.where(columns.kind[where] == F, 1, -1).astype(np.int32)
    rank = np.searchsorted(columns.offsets, where, side="right") - 1
    per_rank = _grouped_peaks(change, rank, columns.ranks, ordered=True)
    layout = columns.layout
    if layout.placement == tuple(range(layout.ranks)):  # stage s is rank s's only stage
        per_stage = per_rank
    else:
        stage = columns.stage[where]
        per_stage = _grouped_peaks(change, stage, columns.num_stages, ordered=columns.stages_contiguous)
    return _per_chunk(per_stage, columns.chunks), _per_chunk(per_rank, columns.chunks)


def _grouped_peaks(change: np.ndarray, group: np.ndarray, groups: int, *, ordered: bool) -> list[int]:
    """Per group, the highest running sum of `change` over its entries in order (0 if never above);
    `ordered`: each group's entries already form one run."""
    if not ordered:  # several stages per rank: each stage's actions in order
        order = np.argsort(group, kind="stable")
        change, group = change[order], group[order]
    running = np.cumsum(change, dtype=np.int64)
    bounds = np.flatnonzero(np.diff(group, prepend=-1))  # where each group begins
    before = np.where(bounds > 0, running[np.maximum(bounds - 1, 0)], 0)
    running -= np.repeat(before, np.diff(np.append(bounds, group.size)))
    peaks = np.zeros(groups, dtype=np.int64)
    np.maximum.at(peaks, group, running)
    return peaks.tolist()


def _per_chunk(counts: list[int], chunks: int) -> list[float]:
    return list(counts) if chunks == 1 else [count / chunks for count in counts]


def version_cells(columns: Columns) -> tuple[np.ndarray, ...]:
    """The weight versions each stage holds, as schedules.semantics.version_lifetimes has them.

    Returns (stage, begin, release, has_release) per held (stage, version), in order (begin -1: from
    the start; no release: held to the end), and per stage whether any versioned action names it.
    """
    return columns.remember("version cells", lambda: _version_cells(columns))


def _version_cells(columns: Columns) -> tuple[np.ndarray, ...]:
    writes = columns.where(*WRITERS)
    writes = writes[columns.version[writes] >= 0]
    reads = columns.where(*READERS)
    reads = reads[columns.version[reads] >= 0]
    written_version = columns.version[writes].astype(np.int64)
    read_version = columns.version[reads].astype(np.int64)
    versions = 1 + int(max(written_version.max(initial=0), read_version.max(initial=0)))
    never = np.iinfo(np.int64).max
    stages = columns.num_stages
    first_write = np.full(stages * versions, never, dtype=np.int64)
    np.minimum.at(first_write, columns.stage[writes].astype(np.int64) * versions + written_version, writes)
    last_read = np.full(stages * versions, -1, dtype=np.int64)
    read_cell = columns.stage[reads].astype(np.int64) * versions + read_version
    if np.all(np.diff(read_cell) >= 0):  # grouped and in order (the usual case): the last of each run
        ends = np.append(np.flatnonzero(np.diff(read_cell)), read_cell.size - 1)
        last_read[read_cell[ends]] = reads[ends]
    else:
        np.maximum.at(last_read, read_cell, reads)
    written = (first_write < never).reshape(stages, versions)
    named = written.any(axis=1) | (last_read.reshape(stages, versions) >= 0).any(axis=1)
    held = written.copy()
    held[:, 0] = named  # version 0 of every stage some action names, from the start
    cells = np.flatnonzero(held.ravel())
    cell_stage = cells // versions
    # released once the next version of the stage is written and it was read for the last time
    has_release = np.append(cell_stage[1:] == cell_stage[:-1], False)
    newer = np.append(cells[1:], 0)
    release = np.where(has_release, np.maximum(first_write[newer], last_read[cells]), never)
    begin = np.where(written.ravel()[cells], first_write[cells], -1)
    return cell_stage, begin, release, has_release, named


def weight_versions(columns: Columns) -> list[int]:
    """Per stage: most versions held at once (at a position, a release comes before a write)."""
    stage, begin, release, _, _ = version_cells(columns)
    span = len(columns) + 2  # positions shifted by one (-1 -> 0); never released -> span - 1
    begins = stage * span + begin + 1
    releases = np.sort(stage * span + np.minimum(release, span - 2) + 1)
    order = np.argsort(begins, kind="stable")
    begins, owner = begins[order], stage[order]
    first_of_stage = np.searchsorted(begins, owner * span, side="left")
    opened = np.arange(begins.size) - first_of_stage + 1
    closed = np.searchsorted(releases, begins, side="right") - np.searchsorted(releases, owner * span)
    result = np.ones(columns.num_stages, dtype=np.int64)
    np.maximum.at(result, owner, opened - closed)
    return result.tolist()


def delays(columns: Columns) -> list[int]:
    """Per stage: largest tau over the updates it receives (schedules.semantics.stage_delays): a weight
    gradient joins the first update of its stage its rank runs after it."""
    events = columns.where(B, W, OPT, RECV_W)
    kind, group = columns.kind[events], columns.stage[events].astype(np.int64)
    if not columns.stages_contiguous:
        order = np.argsort(group, kind="stable")
        events, kind, group = events[order], kind[order], group[order]
    last = events.size
    is_update = (kind == OPT) | (kind == RECV_W)
    at = np.where(is_update, np.arange(last), last)
    following = np.minimum.accumulate(at[::-1])[::-1]  # the next update at or after each event
    target = np.minimum(following, last - 1)
    joined = ~is_update & (following < last) & (group[target] == group)
    grad, update = events[joined], events[target[joined]]
    version, read = columns.version[update].astype(np.int64), columns.version[grad].astype(np.int64)
    applier = np.where(columns.kind[update] == OPT, columns.stage[update], columns.peer[update])
    known = (version >= 0) & (read >= 0)
    per_applier = np.zeros(columns.num_stages, dtype=np.int64)
    np.maximum.at(per_applier, applier[known], (version - 1 - read)[known])
    return per_applier[appliers(columns)].tolist()


def appliers(columns: Columns) -> np.ndarray:
    """Per stage: the stage whose OPT updates it (itself, or an AMDP replica's owner)."""
    result = np.arange(columns.num_stages)
    receives = columns.where(RECV_W)
    for index in receives[columns.peer[receives] >= 0].tolist():
        result[columns.stage[index]] = columns.peer[index]
    return result


def mismatches(columns: Columns) -> list[int]:
    """Per stage: microbatches whose forward and last weight gradient (B, or W) read other versions."""
    forwards, grads = columns.where(F), columns.where(B, W)

    def cell(where: np.ndarray) -> np.ndarray:
        stage = columns.stage[where].astype(np.int64)
        return (stage * columns.steps + columns.step[where]) * columns.microbatches + columns.microbatch[
            where
        ]

    read = np.full(columns.num_stages * columns.steps * columns.microbatches, -1, dtype=np.int32)
    read[cell(forwards)] = columns.version[forwards]
    forward, backward = read[cell(grads)], columns.version[grads]
    differ = (forward >= 0) & (backward >= 0) & (forward != backward)
    return np.bincount(columns.stage[grads][differ], minlength=columns.num_stages).tolist()

"""Compute-only schedules straight into columns, for sizes where an Action per entry does not fit.

    columns = compute_columns("1f1b", ranks=1024, microbatches=8192)    # 16.8M actions in a second

GPipe, 1F1B, ZB-H1, PipeDream and PipeDream-2BW have a closed-form order per stage (the phases their
modules in schedules/ spell out action by action); here each phase is a few array slices per rank.
tests/simulator/test_columnar.py proves every one equal to its generator in schedules/ over a grid of
sizes. The other schedules (interleaved, AMDP) have no such form here: `lowered_columns` builds them
with the IR and converts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from schedules.ir import Versioning, linear_layout
from schedules.registry import build, check_request, get_info
from simulator.columnar.columns import NONE, B, Columns, F, I, W, columns_of, with_arrays
from simulator.columnar.lower import lower_columns

Order = tuple[np.ndarray, np.ndarray]
"""(kind codes, microbatch indices) of one stage's actions, in order."""


def one_f_one_b(total: int, warmups: int, backward: int = B) -> Order:
    """F0 .. F(w-1), then F(w+i) B(i) for i < total - w, then the last w backwards."""
    steady = total - warmups
    kind = np.empty(2 * total, dtype=np.int8)
    index = np.empty(2 * total, dtype=np.int32)
    kind[:warmups], index[:warmups] = F, np.arange(warmups)
    end = warmups + 2 * steady
    kind[warmups:end:2], index[warmups:end:2] = F, np.arange(warmups, total)
    kind[warmups + 1 : end : 2], index[warmups + 1 : end : 2] = backward, np.arange(steady)
    kind[end:], index[end:] = backward, np.arange(steady, total)
    return kind, index


def gpipe(total: int, stage: int, ranks: int) -> Order:
    kind = np.repeat(np.array([F, B], dtype=np.int8), total)
    return kind, np.tile(np.arange(total, dtype=np.int32), 2)


def one_f_one_b_stage(total: int, stage: int, ranks: int) -> Order:
    return one_f_one_b(total, min(ranks - 1 - stage, total))


def zb_h1(total: int, stage: int, ranks: int) -> Order:
    """1F1B with I for B, each W deferred by `stage` microbatches, then the drain (schedules/zb_h1.py).
    After the warm-up, slot i holds F(w+i) (while forwards remain), I(i), W(i - stage) (once i >= stage)."""
    warmups = min(ranks - 1 - stage, total)
    slots = np.arange(total)
    kind = np.empty((total, 3), dtype=np.int8)
    index = np.empty((total, 3), dtype=np.int32)
    kind[:, 0], index[:, 0] = F, slots + warmups
    kind[:, 1], index[:, 1] = I, slots
    kind[:, 2], index[:, 2] = W, slots - stage
    keep = np.stack([slots < total - warmups, np.ones(total, dtype=bool), slots >= stage], axis=1)
    drain = np.arange(max(0, total - stage), total, dtype=np.int32)
    return (
        np.concatenate([np.full(warmups, F, np.int8), kind[keep], np.full(drain.size, W, np.int8)]),
        np.concatenate([np.arange(warmups, dtype=np.int32), index[keep], drain]),
    )


FLUSHING: dict[str, Callable[[int, int, int], Order]] = {
    "gpipe": gpipe,
    "1f1b": one_f_one_b_stage,
    "zb-h1": zb_h1,
}
"""One step's order of a stage, repeated every step (a flush between steps)."""
CONTINUOUS = {"pipedream": Versioning.STASH, "2bw": Versioning.DOUBLE_BUFFER}
"""1F1B over all steps' microbatches at once (schedules/pipedream.py), and its versioning."""


def has_closed_form(name: str) -> bool:
    return name in FLUSHING or name in CONTINUOUS


def compute_columns(name: str, ranks: int, microbatches: int, steps: int = 1) -> Columns:
    """The compute-only schedule that schedules/<name>.py generates, as columns (ScheduleError for sizes
    the schedule cannot take; ValueError for a schedule without a closed form here)."""
    info = get_info(name)
    check_request(info, ranks, microbatches, steps, 1)
    if name in FLUSHING:
        order, total = FLUSHING[name], microbatches
    elif name in CONTINUOUS:
        order, total = one_f_one_b_stage, steps * microbatches
    else:
        raise ValueError(f"{name} has no closed-form order here (closed forms: {sorted(FLUSHING)}, 2bw, ...)")
    kinds, microbatch, step = [], [], []
    for stage in range(ranks):
        kind, index = order(total, stage, ranks)
        if name in FLUSHING:  # the same order every step
            kinds.append(np.tile(kind, steps))
            microbatch.append(np.tile(index, steps))
            step.append(np.repeat(np.arange(steps, dtype=np.int32), kind.size))
        else:  # global microbatch index j = step * m + microbatch
            kinds.append(kind)
            microbatch.append(index % microbatches)
            step.append(index // microbatches)
    return _assemble(name, ranks, microbatches, steps, kinds, microbatch, step)


def _assemble(name, ranks, microbatches, steps, kinds, microbatch, step) -> Columns:
    lengths = [kind.size for kind in kinds]
    offsets = np.zeros(ranks + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rank_of = np.repeat(np.arange(ranks, dtype=np.int32), lengths)  # rank s holds stage s
    total = int(offsets[-1])
    template = Columns(
        name=name,
        layout=linear_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        chunks=1,
        versioning=CONTINUOUS.get(name, Versioning.FLUSH),
        offsets=offsets,
        kind=np.empty(0, np.int8),
        stage=np.empty(0, np.int32),
        microbatch=np.empty(0, np.int32),
        step=np.empty(0, np.int32),
        version=np.empty(0, np.int32),
        peer=np.empty(0, np.int32),
    )
    return with_arrays(
        template,
        offsets,
        kind=np.concatenate(kinds),
        stage=rank_of,
        microbatch=np.concatenate(microbatch).astype(np.int32, copy=False),
        step=np.concatenate(step).astype(np.int32, copy=False),
        version=np.full(total, NONE, np.int32),
        peer=np.full(total, NONE, np.int32),
    )


def lowered_columns(
    name: str, ranks: int, microbatches: int, steps: int = 1, chunks: int | None = None
) -> Columns:
    """The lowered schedule build() returns, as columns: from the closed form and the array passes where
    there is one, else through the IR."""
    if has_closed_form(name) and chunks in (None, 1):
        return lower_columns(compute_columns(name, ranks, microbatches, steps))
    return columns_of(build(name, ranks, microbatches, steps=steps, chunks=chunks))

"""A lowered schedule as flat integer arrays: the form the large-scale path computes on.

    columns = columns_of(build("1f1b", 8, 32))        # from the IR (any schedule)
    columns.to_schedule() == build("1f1b", 8, 32)     # and back, for tests and error messages

Every rank's actions lie one after the other (rank 0's, then rank 1's, ...); `offsets[rank]` is where a
rank's run begins. A field that is None in the IR is -1 here, and a Kind is its index in KINDS.

Note: the memory per action (about 20 bytes, against some 150 for an Action tuple and its ints):

    kind int8 | stage int32 | microbatch int32 | step int32 | version int32 | peer int32
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schedules.ir import Action, Kind, Layout, Schedule, Versioning
from traces.columnar.columns import KIND_CODE as CODE  # one coding of kinds for schedules and traces
from traces.columnar.columns import KINDS, NONE

F, B, I, W, OPT = (CODE[k] for k in (Kind.F, Kind.B, Kind.I, Kind.W, Kind.OPT))
SEND_F, RECV_F, SEND_B, RECV_B = (CODE[k] for k in (Kind.SEND_F, Kind.RECV_F, Kind.SEND_B, Kind.RECV_B))
SEND_G, RECV_G, SEND_W, RECV_W = (CODE[k] for k in (Kind.SEND_G, Kind.RECV_G, Kind.SEND_W, Kind.RECV_W))
FIELDS = ("kind", "stage", "microbatch", "step", "version", "peer")


def is_kind(kind: np.ndarray, *codes: int) -> np.ndarray:
    """Whether each kind code is one of `codes` (a table lookup: one pass, unlike np.isin)."""
    table = np.zeros(len(KINDS), dtype=bool)
    table[list(codes)] = True
    return table[kind]


@dataclass(frozen=True, kw_only=True, eq=False)
class Columns:
    """A schedule's header and its actions as parallel arrays (index i: the i-th action, rank-major)."""

    name: str
    """Registry name of the schedule."""
    layout: Layout
    """Where the stages live."""
    microbatches: int
    """m, per step."""
    steps: int
    """Optimizer steps covered."""
    chunks: int
    """Model chunks per rank (interleaved)."""
    versioning: Versioning
    """How the stages version their weights."""
    offsets: np.ndarray
    """int64, ranks + 1 entries: rank r's actions are [offsets[r], offsets[r + 1])."""
    kind: np.ndarray
    """int8 code of the Kind (KINDS)."""
    stage: np.ndarray
    """int32 virtual stage."""
    microbatch: np.ndarray
    """int32, -1 for none (OPT of a flushing schedule, AMDP's gradient and weight messages)."""
    step: np.ndarray
    """int32 optimizer step."""
    version: np.ndarray
    """int32 weight version read, written or carried; -1 before the version pass."""
    peer: np.ndarray
    """int32 other stage of a SEND_G/RECV_G/SEND_W/RECV_W; -1 elsewhere."""
    memo: dict[str, Any] = field(default_factory=dict, repr=False)
    """What several steps derive from the same columns, derived once (see `remember`)."""

    def remember(self, key: str, derive: Callable[[], Any]) -> Any:
        """derive(), computed on first use and kept with the columns (they never change)."""
        if key not in self.memo:
            self.memo[key] = derive()
        return self.memo[key]

    def where(self, *codes: int) -> np.ndarray:
        """Indices of the actions of these kinds, in order (remembered)."""
        return self.remember(f"where{sorted(codes)}", lambda: np.flatnonzero(is_kind(self.kind, *codes)))

    @property
    def ranks(self) -> int:
        return self.layout.ranks

    @property
    def num_stages(self) -> int:
        return self.layout.num_stages

    @property
    def stages_contiguous(self) -> bool:
        """Whether each stage's actions form one run (every rank holds one stage): then per-stage work
        needs no sort."""
        placement = self.layout.placement
        return len(set(placement)) == len(placement)

    def header(self) -> Schedule:
        """The schedule without its actions (every rank's list empty): what the cost lookups need."""
        return Schedule(
            name=self.name,
            layout=self.layout,
            microbatches=self.microbatches,
            steps=self.steps,
            chunks=self.chunks,
            versioning=self.versioning,
            actions=((),) * self.ranks,
        )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rank_of(self) -> np.ndarray:
        """int32 rank of every action."""
        return np.repeat(np.arange(self.ranks, dtype=np.int32), np.diff(self.offsets))

    def position_of(self) -> np.ndarray:
        """int64 index of every action in its rank's list."""
        return np.arange(len(self), dtype=np.int64) - np.repeat(self.offsets[:-1], np.diff(self.offsets))

    def span(self, rank: int) -> slice:
        return slice(int(self.offsets[rank]), int(self.offsets[rank + 1]))

    def action(self, index: int) -> Action:
        """The IR action at a flat index (for messages)."""
        fields = (int(getattr(self, name)[index]) for name in FIELDS[1:])
        stage, microbatch, step, version, peer = fields
        return Action(
            stage,
            KINDS[self.kind[index]],
            None if microbatch < 0 else microbatch,
            step,
            None if version < 0 else version,
            None if peer < 0 else peer,
        )

    def to_schedule(self) -> Schedule:
        """The IR schedule (one Action per entry: for tests and small schedules)."""
        kinds = [KINDS[code] for code in self.kind.tolist()]
        microbatch, version, peer = (
            [None if x < 0 else x for x in getattr(self, name).tolist()]
            for name in ("microbatch", "version", "peer")
        )
        actions = list(map(Action, self.stage.tolist(), kinds, microbatch, self.step.tolist(), version, peer))
        return Schedule(
            name=self.name,
            layout=self.layout,
            microbatches=self.microbatches,
            steps=self.steps,
            chunks=self.chunks,
            versioning=self.versioning,
            actions=tuple(tuple(actions[self.span(rank)]) for rank in range(self.ranks)),
        )


def columns_of(schedule: Schedule) -> Columns:
    """The columns of an IR schedule."""
    lengths = [len(actions) for actions in schedule.actions]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [action for actions in schedule.actions for action in actions]
    if flat:
        stage, kind, microbatch, step, version, peer = zip(*flat, strict=True)
    else:
        stage = kind = microbatch = step = version = peer = ()
    return Columns(
        name=schedule.name,
        layout=schedule.layout,
        microbatches=schedule.microbatches,
        steps=schedule.steps,
        chunks=schedule.chunks,
        versioning=schedule.versioning,
        offsets=offsets,
        kind=np.array([CODE[k] for k in kind], dtype=np.int8),
        stage=np.array(stage, dtype=np.int32),
        microbatch=_optional(microbatch),
        step=np.array(step, dtype=np.int32),
        version=_optional(version),
        peer=_optional(peer),
    )


def _optional(values: tuple) -> np.ndarray:
    return np.array([NONE if x is None else x for x in values], dtype=np.int32)


def with_arrays(columns: Columns, offsets: np.ndarray, **arrays: np.ndarray) -> Columns:
    """A copy with other actions (every field given)."""
    return Columns(
        name=columns.name,
        layout=columns.layout,
        microbatches=columns.microbatches,
        steps=columns.steps,
        chunks=columns.chunks,
        versioning=columns.versioning,
        offsets=offsets,
        **arrays,
    )

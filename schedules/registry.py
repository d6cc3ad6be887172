"""The schedules pipesim knows, what each needs, and `build()`: name + sizes -> a lowered Schedule.

from schedules import build
schedule = build("2bw", ranks=8, microbatches=16, steps=4)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from schedules.fileio import paused_gc
from schedules.ir import Schedule, ScheduleError
from schedules.passes import lower


@dataclass(frozen=True, kw_only=True)
class ScheduleInfo:
    """A registry entry. The generator lives in schedules/<module>.py as `generate(...)`."""

    name: str
    module: str
    summary: str
    asynchronous: bool = False
    """Never flushes: the weights move on while microbatches are in flight."""
    needs_m_ge_p: bool = False
    needs_m_multiple_of_p: bool = False
    needs_even_p: bool = False
    needs_m_ge_2p: bool = False
    uses_chunks: bool = False
    """Takes `chunks` (v model chunks per rank, looped placement)."""
    v_shaped: bool = False
    """Two stages per rank in a V (`schedules.ir.v_layout`): chunks is always 2."""
    splits_backward: bool = False
    """Runs I and W instead of a full B (some of its backwards, at least)."""
    overlaps: bool = False
    """Has OVERLAP_F_B pairs (a forward and a backward run as one interval)."""
    pytorch: str | None = None
    """The torch.distributed.pipelining class that runs the same order, if PyTorch ships one."""

    def generator(self):
        return importlib.import_module(f"schedules.{self.module}").generate

    @property
    def default_chunks(self) -> int:
        """Chunks per rank when none are asked for: DEFAULT_CHUNKS (looped), 2 (V) or 1."""
        return DEFAULT_CHUNKS if self.uses_chunks else 2 if self.v_shaped else 1


SCHEDULES: dict[str, ScheduleInfo] = {
    info.name: info
    for info in (
        ScheduleInfo(
            name="gpipe",
            module="gpipe",
            summary="all forwards, all backwards, flush",
            pytorch="ScheduleGPipe",
        ),
        ScheduleInfo(
            name="1f1b",
            module="one_f_one_b",
            summary="one forward one backward, flush",
            pytorch="Schedule1F1B",
        ),
        ScheduleInfo(
            name="interleaved",
            module="interleaved",
            summary="1F1B over v model chunks per rank (Megatron), flush",
            needs_m_multiple_of_p=True,
            uses_chunks=True,
            pytorch="ScheduleInterleaved1F1B",
        ),
        ScheduleInfo(
            name="looped-bfs",
            module="looped_bfs",
            summary="breadth first over v looped chunks per rank, flush",
            uses_chunks=True,
            pytorch="ScheduleLoopedBFS",
        ),
        ScheduleInfo(
            name="zb-h1",
            module="zb_h1",
            summary="zero bubble H1: backward split into I and W, W fills the bubble",
            splits_backward=True,
            pytorch="ScheduleInterleavedZeroBubble (one stage per rank)",
        ),
        ScheduleInfo(
            name="interleaved-zb",
            module="interleaved_zb",
            summary="zero bubble over v looped chunks per rank (ZB1P), flush",
            needs_m_multiple_of_p=True,
            uses_chunks=True,
            splits_backward=True,
            pytorch="ScheduleInterleavedZeroBubble",
        ),
        ScheduleInfo(
            name="zb-v",
            module="zb_v",
            summary="zero bubble V: two stages per rank in a V, I and W split, 1F1B memory",
            v_shaped=True,
            splits_backward=True,
            pytorch="ScheduleZBVZeroBubble",
        ),
        ScheduleInfo(
            name="dualpipev",
            module="dualpipev",
            summary="DualPipe cut in half: a V with overlapped forward-backward pairs",
            needs_m_ge_2p=True,
            v_shaped=True,
            splits_backward=True,
            overlaps=True,
            pytorch="ScheduleDualPipeV",
        ),
        ScheduleInfo(
            name="pipedream",
            module="pipedream",
            summary="async 1F1B, weight stashing, one update per microbatch",
            asynchronous=True,
        ),
        ScheduleInfo(
            name="2bw",
            module="pipedream_2bw",
            summary="PipeDream-2BW: two weight buffers, one-step delay",
            asynchronous=True,
            needs_m_ge_p=True,
        ),
        ScheduleInfo(
            name="amdp",
            module="amdp",
            summary="asynchronous multi-directional: P/2 pipelines, replica reduce and broadcast",
            asynchronous=True,
            needs_even_p=True,
            needs_m_multiple_of_p=True,
        ),
    )
}


DEFAULT_CHUNKS = 2
"""Model chunks per rank for interleaved schedules when none are asked for."""
ASYNC_DEFAULT_STEPS = 4
"""Steps the commands cover for asynchronous schedules when none are asked for (their steady state shows)."""


def get_info(name: str) -> ScheduleInfo:
    try:
        return SCHEDULES[name]
    except KeyError:
        known = ", ".join(SCHEDULES)
        raise ScheduleError(f"unknown schedule {name!r} (known: {known})") from None


def check_request(info: ScheduleInfo, ranks: int, microbatches: int, steps: int, chunks: int) -> None:
    """Raise ScheduleError with one line naming the first thing wrong with the sizes."""
    if ranks < 1:
        raise ScheduleError(f"stages P must be at least 1, got {ranks}")
    if microbatches < 1:
        raise ScheduleError(f"microbatches m must be at least 1, got {microbatches}")
    if steps < 1:
        raise ScheduleError(f"steps must be at least 1, got {steps}")
    if chunks < 1:
        raise ScheduleError(f"chunks must be at least 1, got {chunks}")
    if info.v_shaped and chunks != 2:
        raise ScheduleError(f"{info.name} places two stages per rank in a V: chunks must be 2, got {chunks}")
    if chunks > 1 and not (info.uses_chunks or info.v_shaped):
        takes = ", ".join(name for name, other in SCHEDULES.items() if other.uses_chunks)
        raise ScheduleError(f"{info.name} takes no chunks (only {takes} do), got {chunks}")
    if info.needs_even_p and ranks % 2:
        raise ScheduleError(f"{info.name} needs an even number of stages P, got P = {ranks}")
    if info.needs_m_ge_p and microbatches < ranks:
        raise ScheduleError(
            f"{info.name} needs microbatches m >= stages P, got m = {microbatches} < P = {ranks}"
        )
    if info.needs_m_ge_2p and microbatches < 2 * ranks:
        raise ScheduleError(
            f"{info.name} needs microbatches m >= 2P (its 2P stages), got m = {microbatches}, P = {ranks}"
        )
    if info.needs_m_multiple_of_p and microbatches % ranks:
        raise ScheduleError(
            f"{info.name} needs microbatches m to be a multiple of stages P, "
            f"got m = {microbatches}, P = {ranks}"
        )


def build(
    name: str,
    ranks: int,
    microbatches: int,
    steps: int = 1,
    chunks: int | None = None,
    *,
    lowered: bool = True,
) -> Schedule:
    """Generate a schedule by name and (by default) lower it: optimizer steps, versions, comms.

    chunks defaults to ScheduleInfo.default_chunks: 2 for the looped (interleaved) and V schedules, 1
    for the others.
    """
    info = get_info(name)
    if chunks is None:
        chunks = info.default_chunks
    check_request(info, ranks, microbatches, steps, chunks)
    generate = info.generator()
    with paused_gc():  # a large schedule is millions of small acyclic objects (schedules/fileio.py)
        if info.uses_chunks:
            schedule = generate(ranks, microbatches, steps, chunks=chunks)
        else:
            schedule = generate(ranks, microbatches, steps)
        return lower(schedule) if lowered else schedule


def build_with_defaults(
    name: str, ranks: int, microbatches: int, steps: int | None = None, chunks: int | None = None
) -> Schedule:
    """build() with the commands' defaults: steps 1 for synchronous schedules and ASYNC_DEFAULT_STEPS for
    asynchronous ones, chunks the schedule's default_chunks."""
    if steps is None:
        steps = ASYNC_DEFAULT_STEPS if get_info(name).asynchronous else 1
    return build(name, ranks, microbatches, steps=steps, chunks=chunks)

"""Interleaved 1F1B (Megatron-LM's virtual pipeline), docs/schedules.md: v model chunks per rank.

    pipesim schedules show interleaved -p 4 -m 8 --chunks 2

Rank d holds stages d, d+P, ..., d+(v-1)P (`linear_layout(P, v)`). Each rank walks through m*v
chunk-microbatches in Megatron's order: the k-th forward runs chunk (k mod Pv) // P on microbatch
(k // Pv) * P + k mod P, i.e. P microbatches through chunk 0, the same P through chunk 1, ...; the k-th
backward walks the chunks in reverse. Phases on rank d (w = warm-up):

    warm-up:   forwards 0 .. w-1,   w = min(2(P-d-1) + (v-1)P, m*v)
    steady:    forward w+i, backward i
    cool-down: the remaining backwards

With v = 1 it is plain 1F1B (warm-up P-d-1), which is what Megatron runs without virtual stages.
"""

from __future__ import annotations

from schedules.ir import Action, Kind, Schedule, ScheduleError, Versioning, linear_layout
from schedules.steps import chunk_microbatch, one_f_one_b, repeat_steps, warmup


def generate(ranks: int, microbatches: int, steps: int = 1, chunks: int = 2) -> Schedule:
    if microbatches % ranks:
        raise ScheduleError(
            "interleaved needs microbatches m to be a multiple of stages P, "
            f"got m = {microbatches}, P = {ranks}"
        )

    def place(rank: int, k: int, step: int, kind: Kind) -> Action:
        chunk, microbatch = chunk_microbatch(ranks, chunks, k, backward=kind is not Kind.F)
        return Action(chunk * ranks + rank, kind, microbatch, step)

    def one_step(rank: int, step: int) -> list[Action]:
        total = microbatches * chunks
        if chunks == 1:
            warmups = warmup(ranks, rank, microbatches)
        else:
            warmups = min(2 * (ranks - rank - 1) + (chunks - 1) * ranks, total)
        return one_f_one_b(
            rank,
            total,
            warmups,
            forward=lambda k: [place(rank, k, step, Kind.F)],
            backward=lambda k: [place(rank, k, step, Kind.B)],
        )

    return Schedule(
        name="interleaved",
        layout=linear_layout(ranks, chunks),
        microbatches=microbatches,
        steps=steps,
        chunks=chunks,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

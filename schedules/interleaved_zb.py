"""Interleaved zero bubble (ZB1P over v chunks per rank; Qi et al. 2024), docs/schedules.md.

    pipesim schedules show interleaved-zb -p 4 -m 8 --chunks 2

The looped placement and chunk order of interleaved 1F1B (`linear_layout(P, v)`, Megatron's walk through
the chunk-microbatches), with every backward split into I and W as in ZB-H1: rank d defers each W by d
backwards, so the Ws fill the cool-down. The warm-up is shorter than interleaved 1F1B's, one forward per
hop instead of two. The order is torch.distributed.pipelining's ScheduleInterleavedZeroBubble, rank for
rank (tests/schedules/test_pytorch_orders.py); with v = 1 it is ZB-H1. Phases on rank d (k counts
chunk-microbatches, m v of them):

    warm-up:   F(0) .. F(w-1)                      w = min((v-1)P + P-1-d, m v)
    steady:    F(w+i), I(i), then W(i-d) once i >= d
    cool-down: I(k), then W(k-d) once k >= d
    drain:     the Ws still owed
"""

from __future__ import annotations

from schedules.ir import Action, Kind, Schedule, ScheduleError, Versioning, linear_layout
from schedules.steps import chunk_microbatch, one_f_one_b, repeat_steps


def generate(ranks: int, microbatches: int, steps: int = 1, chunks: int = 2) -> Schedule:
    if microbatches % ranks:
        raise ScheduleError(
            "interleaved-zb needs microbatches m to be a multiple of stages P, "
            f"got m = {microbatches}, P = {ranks}"
        )
    total = microbatches * chunks

    def one_step(rank: int, step: int) -> list[Action]:
        def place(k: int, kind: Kind) -> Action:
            chunk, microbatch = chunk_microbatch(ranks, chunks, k, backward=kind is not Kind.F)
            return Action(chunk * ranks + rank, kind, microbatch, step)

        def backward(k: int) -> list[Action]:
            return [place(k, Kind.I), *([place(k - rank, Kind.W)] if k >= rank else [])]

        warmups = min((chunks - 1) * ranks + ranks - 1 - rank, total)
        order = one_f_one_b(rank, total, warmups, forward=lambda k: [place(k, Kind.F)], backward=backward)
        return order + [place(k, Kind.W) for k in range(max(0, total - rank), total)]  # drain

    return Schedule(
        name="interleaved-zb",
        layout=linear_layout(ranks, chunks),
        microbatches=microbatches,
        steps=steps,
        chunks=chunks,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

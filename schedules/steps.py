"""Helpers shared by the generators: repeating a one-step pattern over optimizer steps."""

from __future__ import annotations

from collections.abc import Callable

from schedules.ir import Action


def repeat_steps(
    ranks: int, steps: int, one_step: Callable[[int, int], list[Action]]
) -> tuple[tuple[Action, ...], ...]:
    """actions[rank] = one_step(rank, 0) + one_step(rank, 1) + ... (flushing schedules)."""
    return tuple(
        tuple(action for step in range(steps) for action in one_step(rank, step)) for rank in range(ranks)
    )


def warmup(ranks: int, stage: int, microbatches: int) -> int:
    """w_s = min(P - 1 - s, m): forwards a 1F1B stage runs before its first backward."""
    return min(ranks - 1 - stage, microbatches)


def one_f_one_b(stage: int, microbatches: int, warmups: int, forward, backward) -> list[Action]:
    """The 1F1B order of one stage over microbatches 0..m-1 (j is the microbatch index):

    warm-up:   F0 .. F(w-1)
    steady:    F(w+i), B(i)      for i in 0 .. m-w-1
    cool-down: B(m-w) .. B(m-1)
    forward(j) and backward(j) return the action lists for microbatch j.
    """
    order: list[Action] = []
    for j in range(warmups):
        order += forward(j)
    for i in range(microbatches - warmups):
        order += forward(warmups + i) + backward(i)
    for j in range(microbatches - warmups, microbatches):
        order += backward(j)
    return order


def chunk_microbatch(ranks: int, chunks: int, k: int, *, backward: bool) -> tuple[int, int]:
    """(chunk, microbatch) of a rank's k-th forward (or backward) in Megatron's interleaved order: P
    microbatches through chunk 0, the same P through chunk 1, ...; backwards visit the chunks last to
    first. Rank d's stage of chunk c is c * P + d (`linear_layout(P, chunks)`)."""
    group = ranks * chunks  # chunk-microbatches in one pass of P microbatches through every chunk
    chunk = (k % group) // ranks
    if backward:
        chunk = chunks - 1 - chunk
    return chunk, (k // group) * ranks + k % ranks

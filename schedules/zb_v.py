"""ZB-V, the zero-bubble V schedule (Qi et al. 2024, section 6), docs/schedules.md.

    pipesim schedules show zb-v -p 4 -m 8

The model is cut into 2P stages placed in a V (`v_layout`): rank r holds stage r (chunk 0, on the way
down) and stage 2P-1-r (chunk 1, on the way back), so the last stage is on rank 0 beside the first.
Backwards are split into I and W, and each rank interleaves one F, one I and one W per chunk in its
steady state. With t_F = t_I = t_W every rank then holds at most 2P chunk-microbatches of half a stage,
the same activation memory as 1F1B, with almost no bubble. The order is torch.distributed.pipelining's
ScheduleZBVZeroBubble, rank for rank (tests/schedules/test_pytorch_orders.py). Phases on rank r (F0/F1:
the forward of chunk 0/1, n = max(m, 2P-1) counted microbatches; those >= m are dropped at the end):

    warm-up 1:  F0 x (2(P-r) - 1)
    warm-up 2:  (F1 F0) x r
    warm-up 3:  (F1 I1 W1) x (P-r)
    steady:     F0 I0 W0 F1 I1 W1, while chunk 1 has forwards left (F0 while chunk 0 has)
    cool-down:  (I0 I1) x r, then (I0 W0) x (P-r)
    drain:      the Ws still owed, chunk 1's then chunk 0's
"""

from __future__ import annotations

from collections import Counter

from schedules.ir import Action, Kind, Schedule, Versioning, v_layout
from schedules.steps import repeat_steps


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    counted = max(microbatches, 2 * ranks - 1)  # PyTorch counts at least 2P-1 microbatches

    def one_step(rank: int, step: int) -> list[Action]:
        chunk = (rank, 2 * ranks - 1 - rank)  # the stage of chunk 0 and of chunk 1
        done: Counter[tuple[int, Kind]] = Counter()
        order: list[Action] = []

        def run(c: int, *kinds: Kind) -> None:
            for kind in kinds:
                order.append(Action(chunk[c], kind, done[c, kind], step))
                done[c, kind] += 1

        for _ in range(2 * (ranks - rank) - 1):  # warm-up 1
            run(0, Kind.F)
        for _ in range(rank):  # warm-up 2
            run(1, Kind.F)
            run(0, Kind.F)
        for _ in range(ranks - rank):  # warm-up 3
            run(1, Kind.F, Kind.I, Kind.W)
        while done[1, Kind.F] < done[0, Kind.F] or done[0, Kind.F] < counted:  # steady
            if done[0, Kind.F] < counted:
                run(0, Kind.F)
            run(0, Kind.I, Kind.W)
            run(1, Kind.F, Kind.I, Kind.W)
        for _ in range(rank):  # cool-down
            run(0, Kind.I)
            run(1, Kind.I)
        for _ in range(ranks - rank):
            run(0, Kind.I, Kind.W)
        for c in (1, 0):  # drain
            while done[c, Kind.W] < done[c, Kind.I]:
                run(c, Kind.W)
        return [action for action in order if action.microbatch < microbatches]

    return Schedule(
        name="zb-v",
        layout=v_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        chunks=2,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

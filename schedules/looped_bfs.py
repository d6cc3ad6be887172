"""Looped BFS, breadth-first pipeline parallelism (Lamy-Poirier 2023), docs/schedules.md.

    pipesim schedules show looped-bfs -p 4 -m 8 --chunks 2

The looped placement of interleaved 1F1B (`linear_layout(P, v)`: rank d holds stages d, d+P, ...), but
breadth first, like GPipe over the chunks: a rank runs every microbatch through its first chunk, then
through its next chunk, and so on, then the backwards chunk by chunk, last chunk first, each over the
microbatches in reverse order. Every rank holds all m v chunk-microbatches at the turn (as GPipe holds
m). The order is torch.distributed.pipelining's ScheduleLoopedBFS, rank for rank. On rank d:

    forwards:  F(d, 0..m-1), F(d+P, 0..m-1), ..., F(d+(v-1)P, 0..m-1)
    backwards: B(d+(v-1)P, m-1..0), ..., B(d, m-1..0)
"""

from __future__ import annotations

from schedules.ir import Action, Kind, Schedule, Versioning, linear_layout
from schedules.steps import repeat_steps


def generate(ranks: int, microbatches: int, steps: int = 1, chunks: int = 2) -> Schedule:
    def one_step(rank: int, step: int) -> list[Action]:
        stages = [chunk * ranks + rank for chunk in range(chunks)]
        forwards = [Action(stage, Kind.F, j, step) for stage in stages for j in range(microbatches)]
        backwards = [
            Action(stage, Kind.B, j, step)
            for stage in reversed(stages)
            for j in reversed(range(microbatches))
        ]
        return forwards + backwards

    return Schedule(
        name="looped-bfs",
        layout=linear_layout(ranks, chunks),
        microbatches=microbatches,
        steps=steps,
        chunks=chunks,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

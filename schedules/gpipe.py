"""GPipe: all forwards, then all backwards, then one synchronous update (docs/schedules.md).

pipesim schedules show gpipe -p 4 -m 8
"""

from __future__ import annotations

from schedules.ir import Action, Kind, Schedule, Versioning, linear_layout
from schedules.steps import repeat_steps


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    """Compute-only GPipe; backwards run in microbatch order, like PyTorch's ScheduleGPipe."""

    def one_step(stage: int, step: int) -> list[Action]:
        forwards = [Action(stage, Kind.F, j, step) for j in range(microbatches)]
        backwards = [Action(stage, Kind.B, j, step) for j in range(microbatches)]
        return forwards + backwards

    return Schedule(
        name="gpipe",
        layout=linear_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

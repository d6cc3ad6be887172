"""1F1B with flush (PipeDream-Flush, DAPPLE, Megatron's non-interleaved schedule), docs/schedules.md.

Stage s runs w_s = min(P-1-s, m) warm-up forwards, then m - w_s (forward, backward) pairs, then w_s
cool-down backwards, then the synchronous update.

    pipesim schedules show 1f1b -p 4 -m 8
"""

from __future__ import annotations

from schedules.ir import Action, Kind, Schedule, Versioning, linear_layout
from schedules.steps import one_f_one_b, repeat_steps, warmup


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    def one_step(stage: int, step: int) -> list[Action]:
        return one_f_one_b(
            stage,
            microbatches,
            warmup(ranks, stage, microbatches),
            forward=lambda j: [Action(stage, Kind.F, j, step)],
            backward=lambda j: [Action(stage, Kind.B, j, step)],
        )

    return Schedule(
        name="1f1b",
        layout=linear_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

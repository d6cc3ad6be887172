"""ZB-H1, the memory-efficient zero-bubble schedule (Qi et al. 2024), docs/schedules.md.

    pipesim schedules show zb-h1 -p 4 -m 8

The backward is split into I (gradient for the inputs, on the critical path) and W (gradient for the
weights, free to wait). Stage s runs 1F1B with I in place of B and defers each W by s microbatches, so
its Ws fill the cool-down bubble that 1F1B leaves. Activations are in flight from F to I, as in 1F1B
(P - s on stage s); a deferred W keeps only its layer inputs. With t_F = t_I = t_W the idle time per
rank drops from 3(P-1) to P-1 (a third). Same order as the zero-bubble 1F1B of torch.distributed.pipelining.

    warm-up:   F0 .. F(w-1)                          w = min(P-1-s, m)
    steady:    F(w+i), I(i), then W(i-s) once i >= s
    cool-down: I(j), then W(j-s) once j >= s
    drain:     the last min(s, m) Ws
"""

from __future__ import annotations

from schedules.ir import Action, Kind, Schedule, Versioning, linear_layout
from schedules.steps import one_f_one_b, repeat_steps, warmup


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    def one_step(stage: int, step: int) -> list[Action]:
        def backward(j: int) -> list[Action]:
            deferred = [Action(stage, Kind.W, j - stage, step)] if j >= stage else []
            return [Action(stage, Kind.I, j, step), *deferred]

        order = one_f_one_b(
            stage,
            microbatches,
            warmup(ranks, stage, microbatches),
            forward=lambda j: [Action(stage, Kind.F, j, step)],
            backward=backward,
        )
        drain = [Action(stage, Kind.W, j, step) for j in range(max(0, microbatches - stage), microbatches)]
        return order + drain

    return Schedule(
        name="zb-h1",
        layout=linear_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

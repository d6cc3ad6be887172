"""PipeDream: asynchronous 1F1B with weight stashing and one update per microbatch (docs/schedules.md).

The K steps are one continuous 1F1B stream over K * m microbatches: no flush between steps. The lowering
passes add an OPT after every backward (Versioning.STASH) and give every forward the newest weights,
W_s(max(0, j - w_s)) for global microbatch j = step * m + microbatch and w_s = P-1-s, which its backward
reloads; stage s keeps at most P-s versions and its delay is tau_s = P-1-s.

    pipesim schedules show pipedream -p 4 -m 8 --steps 2
"""

from __future__ import annotations

from schedules.ir import Action, Kind, Schedule, Versioning, linear_layout
from schedules.steps import one_f_one_b, warmup


def continuous_one_f_one_b(ranks: int, microbatches: int, steps: int) -> tuple[tuple[Action, ...], ...]:
    """Stage s (on rank s) runs 1F1B over the global microbatches j = 0 .. steps*m - 1:

    warm-up:   w_s = min(P-1-s, steps*m) forwards, reaching into the next step's microbatches
    steady:    F(j + w_s), B(j)  -- the step boundary falls inside this phase, nothing flushes
    cool-down: the last w_s backwards, once at the very end of the run
    """
    total = steps * microbatches

    def action(stage: int, kind: Kind, j: int) -> list[Action]:
        return [Action(stage, kind, j % microbatches, j // microbatches)]

    return tuple(
        tuple(
            one_f_one_b(
                stage,
                total,
                warmup(ranks, stage, total),
                forward=lambda j, stage=stage: action(stage, Kind.F, j),
                backward=lambda j, stage=stage: action(stage, Kind.B, j),
            )
        )
        for stage in range(ranks)
    )


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    """Compute-only PipeDream; `lower()` adds the per-microbatch OPTs, stashed versions and comms."""
    return Schedule(
        name="pipedream",
        layout=linear_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        versioning=Versioning.STASH,
        actions=continuous_one_f_one_b(ranks, microbatches, steps),
    )

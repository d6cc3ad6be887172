"""Train one study run in the executor's single-process mode and keep its curves.

    from executor.study.train import train
    curve = train(config)          # a RunConfig with single_process=True (executor.study.grid.run_config)
    curve.losses[k]                # mean training loss of step k's m microbatches
    curve.vals                     # ((step, validation loss), ...) every val_every steps and after the last

Every rank runs in this process, round robin (executor.run.local): the same computations as the distributed
run, bit for bit, at the cost of one core. A run whose loss stops being finite is stopped there (the
rest of its budget would compute NaNs): its curve ends at that step and `diverged_at` says where.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

from executor.interpreter.runtime import Runtime
from executor.run.assemble import Assembly
from executor.run.local import run_local
from executor.run.runconfig import RunConfig
from executor.training.data import Corpus, load_corpus


@dataclass(frozen=True, kw_only=True)
class Curve:
    """What one run leaves: its losses per step and its validation losses."""

    losses: tuple[float | None, ...]
    """Mean training loss over each step's m microbatches (None where it was not finite)."""
    vals: tuple[tuple[int, float | None], ...]
    """(step, mean validation loss) at each measurement; None where it was not finite."""
    wall_s: float
    """Seconds the run took in this process (every rank on one core)."""
    diverged_at: int | None = None
    """The step where the training loss stopped being finite; None if it never did."""


class Diverged(Exception):
    """Raised between round-robin rounds when a loss is no longer finite."""

    def __init__(self, step: int) -> None:
        super().__init__(f"loss not finite at step {step}")
        self.step = step


@lru_cache(maxsize=2)
def corpus_for(data: str | None) -> Corpus:
    """The corpus, loaded once per worker process (every run of a study reads the same one)."""
    return load_corpus(data)


def train(config: RunConfig, corpus: Corpus | None = None) -> Curve:
    """Run `config` to its end (or its divergence) in this process; return its curves."""
    runtimes: list[Runtime] = []
    seen: dict[int, int] = {}

    def watch() -> None:  # between rounds: stop as soon as a loss is NaN or infinite
        for runtime in runtimes:
            for step, _, loss, _ in runtime.losses[seen.get(runtime.rank, 0) :]:
                if not math.isfinite(loss):
                    raise Diverged(step)
            seen[runtime.rank] = len(runtime.losses)

    started = time.perf_counter()
    diverged_at = None
    try:
        assembly = Assembly(config, corpus=corpus if corpus is not None else corpus_for(config.data))
        run_local(assembly, poll=watch, configure=runtimes.extend)
    except Diverged as stop:
        diverged_at = stop.step
    wall = time.perf_counter() - started
    return Curve(
        losses=step_losses(runtimes, config.steps if diverged_at is None else diverged_at),
        vals=tuple((step, _finite(loss)) for step, loss in sorted(v[:2] for r in runtimes for v in r.vals)),
        wall_s=wall,
        diverged_at=diverged_at,
    )


def step_losses(runtimes: list[Runtime], steps: int) -> tuple[float | None, ...]:
    """Mean loss per step over the microbatches every last stage logged (AMDP: several last stages)."""
    per_step: dict[int, list[float]] = {}
    for runtime in runtimes:
        for step, _, loss, _ in runtime.losses:
            per_step.setdefault(step, []).append(loss)
    return tuple(_finite(math.fsum(per_step[k]) / len(per_step[k])) for k in range(steps) if k in per_step)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None

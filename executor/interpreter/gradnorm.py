"""The global gradient norm of a synchronous step: what the NORM op of executor.interpreter.program does.

    norms = GlobalNorm(mailman, stages, device)
    norms.ready(step)          # contributes this rank's share once; True when every rank has
    norms.run(step, timeout)   # waits for the sum over all ranks, keeps sqrt(sum) for the step's OPTs
    norms.of(step)             # the norm each OPT of the step passes to StageOptimizer.step

A rank's share is the float64 sum of grad_norm_squared() over the stages it owns optimizers for; the
shares are summed across ranks (an all-reduce, or its single-process equivalent in
executor.interpreter.comm), so every stage of the step clips by the norm over all parameters, as
single-process training does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from executor.interpreter.comm import Mailman


class GlobalNorm:
    """The NORM ops of one rank: contribute, wait, remember the norm until the step's cut."""

    def __init__(self, mailman: Mailman, stages: Mapping[int, object], device: torch.device) -> None:
        self.mailman = mailman
        self.stages = stages
        self.device = device
        """Where the share lives (NCCL sums device tensors only)."""
        self.norms: dict[int, float] = {}
        """step -> global gradient norm, from its NORM op until its CUT."""

    def share(self) -> torch.Tensor:
        """Sum of the squared gradient norms of the stages this rank updates (float64)."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for state in self.stages.values():
            if state.optimizer is not None:
                total = total + state.optimizer.grad_norm_squared().to(self.device)
        return total

    def ready(self, step: int) -> bool:
        """Contribute (once) and say whether the sum is complete (the single-process scheduler asks)."""
        self.mailman.start_sum(step, self.share())
        return self.mailman.sum_ready(step)

    def run(self, step: int, timeout: float | None) -> None:
        self.mailman.start_sum(step, self.share())
        self.norms[step] = math.sqrt(float(self.mailman.take_sum(step, timeout=timeout)))

    def of(self, step: int) -> float | None:
        """The step's global norm; None where the program has no NORM (per-stage clipping)."""
        return self.norms.get(step)

    def forget(self, step: int) -> None:
        self.norms.pop(step, None)

"""Learning rate as a function of the update index: warm-up + cosine, and PipeMare's staleness scaling.

    from executor.training.optim.schedule import scheduled_lr, pipemare_lr
    lr = pipemare_lr(scheduled_lr(config, t), t, delay=3, horizon=100)

t counts the updates already applied to the stage (0 for its first update).
"""

from __future__ import annotations

import math

from executor.training.optim.config import OptimizerConfig


def scheduled_lr(config: OptimizerConfig, t: int) -> float:
    """Linear warm-up to config.lr over warmup_steps, then cosine down to lr * min_lr_ratio at total_steps.

    t < W:        lr (t + 1) / W
    W <= t < T:   lr_min + (lr - lr_min) (1 + cos(pi (t - W) / (T - W))) / 2
    t >= T:       lr_min                            (no decay at all when total_steps is None)
    """
    if t < config.warmup_steps:
        return config.lr * (t + 1) / config.warmup_steps
    if config.total_steps is None:
        return config.lr
    low = config.lr * config.min_lr_ratio
    progress = min((t - config.warmup_steps) / (config.total_steps - config.warmup_steps), 1.0)
    return low + (config.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def pipemare_lr(lr: float, t: int, delay: int, horizon: int) -> float:
    """PipeMare's learning-rate correction: lr / tau^(1 - min(t / T_c, 1)) for tau >= 1, else lr.

    tau is the stage's delay (updates between reading the weights and applying their gradient) and T_c the
    horizon over which the scaling fades out: the first update runs at lr / tau, update T_c and later at lr.
    """
    if delay < 1:
        return lr
    return lr / delay ** (1.0 - min(t / horizon, 1.0))

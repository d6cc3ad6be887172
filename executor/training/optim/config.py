"""The optimizer settings of a run: one frozen dataclass, checked on creation with one-line errors.

from executor.training.optim.config import OptimizerConfig
config = OptimizerConfig(name="nadamw", lr=1e-3, correction="pipemare", warmup_steps=10, total_steps=200)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from executor.errors import ExecutorConfigError

OPTIMIZERS = ("sgd", "adamw", "nadamw", "muon", "basis-rotation")
"""Valid optimizer names."""
CORRECTIONS = ("none", "pipemare", "delay")
"""Valid staleness corrections."""
ROTATION_SIDES = ("both", "one")
"""Basis rotation variants: rotate both sides, or only the smaller one."""

_DEFAULT_BETAS = {"nadamw": (0.99, 0.95)}
_BETAS = (0.9, 0.95)


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Optimizer, schedule and correction of every stage (see executor.training.optim for the rules)."""

    name: str = "adamw"
    """The optimizer, one of OPTIMIZERS."""
    lr: float = 1e-3
    """Peak learning rate, per update (Muon's is rescaled to match AdamW's RMS: `match_rms_adamw`)."""
    weight_decay: float = 0.0
    """Weight decay per update, times lr; decoupled except for SGD (L2). Only on tensors with ndim >= 2."""
    betas: tuple[float, float] | None = None
    """(beta1, beta2) of the Adam-like optimizers; None: (0.9, 0.95), and (0.99, 0.95) for nadamw."""
    eps: float = 1e-8
    """Denominator epsilon of the Adam-like optimizers, unitless."""
    momentum: float = 0.9
    """SGD momentum (heavy ball), a fraction."""
    muon_momentum: float = 0.95
    """Muon momentum (Nesterov) for the hidden matrices, a fraction."""
    nesterov_per_stage: bool = False
    """nadamw only: beta1_s = beta1 + (P - s - 1)(0.99 - beta1) / P on stage s of P."""
    grad_clip: float = 0.0
    """Clip the global gradient norm (over the stage's parameters, or the norm given) to this; 0: off."""
    warmup_steps: int = 0
    """Linear warm-up length, in updates: lr (t + 1) / warmup_steps for t < warmup_steps."""
    total_steps: int | None = None
    """End of the cosine decay, in updates (lr * min_lr_ratio from there on); None: no decay."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine decay, as a fraction of lr."""
    correction: str = "none"
    """Staleness correction, one of CORRECTIONS."""
    pipemare_steps: int = 100
    """PipeMare's T_c, in updates: the scaling lr / tau^(1 - min(t / T_c, 1)) fades out over it."""
    delay_lambda: float = 0.5
    """The delay correction's lambda: Delta_t = u_t + lambda (u_t - u_{t-1}), unitless."""
    rotation_every: int = 10
    """Basis rotation: refresh the bases every this many updates (T)."""
    rotation_beta: float | None = None
    """Basis rotation: decay b of the L and R factors; None: beta2."""
    rotation_sides: str = "both"
    """Basis rotation: "both" sides, or "one" (the smaller side of each matrix)."""

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_choice("--optimizer", self.name, OPTIMIZERS)
        _check_choice("--correction", self.correction, CORRECTIONS)
        _check_choice("--rotation-sides", self.rotation_sides, ROTATION_SIDES)
        _check_range("--lr", self.lr, low=0.0, low_open=True)
        _check_range("--weight-decay", self.weight_decay, low=0.0)
        _check_range("--eps", self.eps, low=0.0, low_open=True)
        _check_range("--grad-clip", self.grad_clip, low=0.0)
        _check_range("--min-lr-ratio", self.min_lr_ratio, low=0.0, high=1.0)
        if self.betas is not None and len(self.betas) != 2:
            raise ExecutorConfigError(f"--betas takes two values (beta1, beta2), got {len(self.betas)}")
        for flag, value in (("--momentum", self.momentum), ("--muon-momentum", self.muon_momentum)):
            _check_range(flag, value, low=0.0, high=1.0, high_open=True)
        for flag, value in zip(("--beta1", "--beta2"), self.resolved_betas(), strict=True):
            _check_range(flag, value, low=0.0, high=1.0, high_open=True)
        if self.rotation_beta is not None:
            _check_range("--rotation-beta", self.rotation_beta, low=0.0, high=1.0, high_open=True)
        _check_range("--warmup-steps", self.warmup_steps, low=0)
        _check_range("--pipemare-steps", self.pipemare_steps, low=1)
        _check_range("--rotation-every", self.rotation_every, low=1)
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ExecutorConfigError(
                f"--total-steps {self.total_steps} must exceed --warmup-steps {self.warmup_steps}"
            )

    def resolved_betas(self) -> tuple[float, float]:
        """The betas in use: the given ones or the optimizer's default."""
        if self.betas is not None:
            return tuple(self.betas)
        return _DEFAULT_BETAS.get(self.name, _BETAS)


def _check_finite(config: OptimizerConfig) -> None:
    """inf and nan compare false with every bound: refuse them before any range check."""
    for item in fields(config):
        values = getattr(config, item.name)
        for value in values if isinstance(values, tuple) else (values,):
            if isinstance(value, float) and not math.isfinite(value):
                flag = "--" + item.name.replace("_", "-")
                raise ExecutorConfigError(f"{flag} must be a finite number, got {value}")


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ExecutorConfigError(f"{flag}: unknown {value!r}; choose from {', '.join(choices)}")


def _check_range(
    flag: str,
    value: float,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        bound = f"{left}{low}, {high if high is not None else 'inf'}{right}"
        raise ExecutorConfigError(f"{flag} must be in {bound}, got {value}")

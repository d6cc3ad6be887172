"""Optimizers and staleness corrections of the executor, one interface, each chosen by a name.

    from executor.training.optim import OptimizerConfig, make_optimizer
    config = OptimizerConfig(name="muon", lr=2e-3)
    optimizer = make_optimizer(config, stage_module, stage=0, stages=4, delay=3)
    optimizer.step(t); optimizer.zero_grad()
    checkpoint = optimizer.state_dict()       # everything: moments, bases, correction memory

Names (OPTIMIZERS): sgd, adamw, nadamw (the Nesterov baseline, beta1 = 0.99), muon (torch.optim.Muon on
hidden matrices, AdamW on the rest), basis-rotation (docs/optimizers.md, both-sided or one-sided). Corrections
(CORRECTIONS): none, pipemare (learning-rate scaling by the stage delay), delay (the one-step delay
correction). Modules: config (the settings), schedule (warm-up + cosine, PipeMare), basis_rotation,
corrections (delay correction), stage (StageOptimizer and make_optimizer).
"""

from executor.training.optim.basis_rotation import BasisRotation
from executor.training.optim.config import CORRECTIONS, OPTIMIZERS, ROTATION_SIDES, OptimizerConfig
from executor.training.optim.corrections import DelayCorrection
from executor.training.optim.schedule import pipemare_lr, scheduled_lr
from executor.training.optim.stage import StageOptimizer, StepReport, make_optimizer

__all__ = [
    "CORRECTIONS",
    "OPTIMIZERS",
    "ROTATION_SIDES",
    "BasisRotation",
    "DelayCorrection",
    "OptimizerConfig",
    "StageOptimizer",
    "StepReport",
    "make_optimizer",
    "pipemare_lr",
    "scheduled_lr",
]

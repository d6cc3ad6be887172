"""StageOptimizer: the optimizer of one pipeline stage, with its schedule, clipping and correction.

    optimizer = make_optimizer(config, stage_module.named_parameters(), stage=1, stages=4, delay=2)
    ...backward...
    report = optimizer.step(t)        # t: updates already applied to this stage
    optimizer.zero_grad()

One step: lr = scheduled_lr(t), scaled by PipeMare when chosen; clip the gradients to grad_clip by their
global norm (computed over this stage's parameters, or given by the caller who summed the squared norms
of all stages); then the base optimizers step, wrapped in the delay correction when chosen.

Which parameter goes where:

    name       hidden 2-D matrices (blocks)     everything else (embeddings, head, norms, biases)
    sgd        SGD (momentum)                   SGD (momentum)
    adamw      AdamW                            AdamW
    nadamw     NAdam, decoupled weight decay    NAdam, decoupled weight decay
    muon       torch.optim.Muon                 AdamW
    basis-rot. BasisRotation                    AdamW

Weight decay applies to tensors with ndim >= 2 only (matrices and embeddings), never to norms and biases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from executor.errors import ExecutorConfigError
from executor.training.model import is_hidden_matrix
from executor.training.optim.basis_rotation import BasisRotation
from executor.training.optim.config import OptimizerConfig
from executor.training.optim.corrections import DelayCorrection
from executor.training.optim.schedule import pipemare_lr, scheduled_lr

NamedParameters = list[tuple[str, torch.Tensor]]
_LAYOUT = ("name", "correction", "rotation_sides")
"""The settings that decide the shape of the optimizer state: a resume must match them."""


@dataclass(frozen=True, kw_only=True)
class StepReport:
    """What one optimizer step did."""

    lr: float
    """Learning rate used (after schedule and correction), per update."""
    grad_norm: float | None
    """Global gradient norm before clipping; None when clipping is off (not computed)."""


class StageOptimizer:
    """One stage's optimizers (one or two torch optimizers) behind a single step(t)."""

    def __init__(
        self,
        config: OptimizerConfig,
        parameters: list[torch.Tensor],
        optimizers: list[torch.optim.Optimizer],
        *,
        delay: int,
    ) -> None:
        self.config = config
        self.parameters = parameters
        self.optimizers = optimizers
        self.delay = delay
        self.correction = (
            DelayCorrection(parameters, config.delay_lambda) if config.correction == "delay" else None
        )

    def lr_at(self, t: int) -> float:
        """The learning rate of update t: schedule, then PipeMare's scaling when chosen."""
        lr = scheduled_lr(self.config, t)
        if self.config.correction == "pipemare":
            lr = pipemare_lr(lr, t, self.delay, self.config.pipemare_steps)
        return lr

    def grad_norm_squared(self) -> torch.Tensor:
        """Sum of the squared gradient norms of this stage, float64 (to all-reduce across stages)."""
        norms = [
            torch.linalg.vector_norm(parameter.grad, dtype=torch.float64) ** 2
            for parameter in self.parameters
            if parameter.grad is not None
        ]
        return torch.stack(norms).sum() if norms else torch.zeros((), dtype=torch.float64)

    def step(self, t: int, *, grad_norm: float | None = None) -> StepReport:
        """Apply update t (0-based count of updates done). grad_norm: the global norm, if computed outside."""
        lr = self.lr_at(t)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        if self.config.grad_clip > 0:
            grad_norm = self._clip(grad_norm)
        if self.correction is not None:
            self.correction.before()
        for optimizer in self.optimizers:
            optimizer.step()
        if self.correction is not None:
            self.correction.after()
        return StepReport(lr=lr, grad_norm=grad_norm)

    @torch.no_grad()
    def _clip(self, grad_norm: float | None) -> float:
        if grad_norm is None:
            grad_norm = float(self.grad_norm_squared().sqrt())
        scale = self.config.grad_clip / (grad_norm + 1e-6)
        if scale < 1.0:
            for parameter in self.parameters:
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
        return grad_norm

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    def state_dict(self) -> dict:
        """Everything a resumed run needs to go on bit-identically (tensors by reference, as torch does)."""
        return {
            "config": asdict(self.config),
            "delay": self.delay,
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "correction": None if self.correction is None else self.correction.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore state_dict(); a state from another optimizer setup is a one-line user error."""
        saved = {key: state["config"][key] for key in _LAYOUT} | {"delay": state["delay"]}
        wanted = {key: getattr(self.config, key) for key in _LAYOUT} | {"delay": self.delay}
        if saved != wanted:
            raise ExecutorConfigError(
                f"resume: the optimizer state was saved for {saved}, this run is {wanted}"
            )
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        if self.correction is not None:
            self.correction.load_state_dict(state["correction"])

    def state_bytes(self) -> int:
        """Bytes of optimizer state held (moments, factors, bases, correction memory); not the weights."""
        total = sum(
            value.nbytes
            for optimizer in self.optimizers
            for per_parameter in optimizer.state.values()
            for value in per_parameter.values()
            if isinstance(value, torch.Tensor)
        )
        return total + (0 if self.correction is None else self.correction.state_bytes())


def make_optimizer(
    config: OptimizerConfig,
    params: nn.Module | Iterable[tuple[str, torch.Tensor]] | Iterable[torch.Tensor],
    *,
    stage: int = 0,
    stages: int = 1,
    delay: int = 0,
) -> StageOptimizer:
    """The optimizer of stage `stage` of `stages`, whose updates apply gradients `delay` updates old.

    params: a module, its named_parameters(), or plain tensors (named param0, param1, ...; 2-D ones then
    count as hidden matrices). Parameters that do not require gradients are left out.
    """
    if not 0 <= stage < stages:
        raise ExecutorConfigError(f"stage {stage} is outside 0..{stages - 1}")
    named = _named(params)
    if not named:
        raise ExecutorConfigError(f"stage {stage} has no trainable parameters")
    optimizers = _BUILDERS[config.name](config, named, stage, stages)
    return StageOptimizer(config, [parameter for _, parameter in named], optimizers, delay=delay)


def _named(params) -> NamedParameters:
    if isinstance(params, nn.Module):
        params = params.named_parameters()
    named = [item if isinstance(item, tuple) else (f"param{i}", item) for i, item in enumerate(params)]
    return [(name, parameter) for name, parameter in named if parameter.requires_grad]


def _decay_groups(config: OptimizerConfig, named: NamedParameters) -> list[dict]:
    """Two groups: weight decay on ndim >= 2, none on norms and biases; empty groups left out."""
    groups = [
        {"params": [p for _, p in named if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def _split_matrices(named: NamedParameters) -> tuple[NamedParameters, NamedParameters]:
    matrices = [(name, p) for name, p in named if is_hidden_matrix(name, p)]
    others = [(name, p) for name, p in named if not is_hidden_matrix(name, p)]
    return matrices, others


def _adamw(config: OptimizerConfig, named: NamedParameters) -> list[torch.optim.Optimizer]:
    if not named:
        return []
    groups = _decay_groups(config, named)
    return [torch.optim.AdamW(groups, lr=config.lr, betas=config.resolved_betas(), eps=config.eps)]


def _build_sgd(config, named, stage, stages) -> list[torch.optim.Optimizer]:
    return [torch.optim.SGD(_decay_groups(config, named), lr=config.lr, momentum=config.momentum)]


def _build_adamw(config, named, stage, stages) -> list[torch.optim.Optimizer]:
    return _adamw(config, named)


def _build_nadamw(config, named, stage, stages) -> list[torch.optim.Optimizer]:
    beta1, beta2 = config.resolved_betas()
    if config.nesterov_per_stage:
        beta1 = beta1 + (stages - stage - 1) * (0.99 - beta1) / stages
    groups = _decay_groups(config, named)
    return [
        torch.optim.NAdam(
            groups, lr=config.lr, betas=(beta1, beta2), eps=config.eps, decoupled_weight_decay=True
        )
    ]


def _build_muon(config, named, stage, stages) -> list[torch.optim.Optimizer]:
    if not hasattr(torch.optim, "Muon"):
        raise ExecutorConfigError(
            f"--optimizer muon needs torch.optim.Muon, absent in torch {torch.__version__}"
        )
    matrices, others = _split_matrices(named)
    if not matrices:
        return _adamw(config, others)
    muon = torch.optim.Muon(
        [p for _, p in matrices],
        lr=config.lr,
        weight_decay=config.weight_decay,
        momentum=config.muon_momentum,
        adjust_lr_fn="match_rms_adamw",
    )
    return [muon, *_adamw(config, others)]


def _build_basis_rotation(config, named, stage, stages) -> list[torch.optim.Optimizer]:
    matrices, others = _split_matrices(named)
    if not matrices:
        return _adamw(config, others)
    rotation = BasisRotation(
        [p for _, p in matrices],
        lr=config.lr,
        betas=config.resolved_betas(),
        eps=config.eps,
        weight_decay=config.weight_decay,
        every=config.rotation_every,
        beta=config.rotation_beta,
        sides=config.rotation_sides,
    )
    return [rotation, *_adamw(config, others)]


_BUILDERS = {
    "sgd": _build_sgd,
    "adamw": _build_adamw,
    "nadamw": _build_nadamw,
    "muon": _build_muon,
    "basis-rotation": _build_basis_rotation,
}

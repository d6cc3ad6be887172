"""Basis rotation (docs/optimizers.md): Adam run in the eigenbasis of the gradient's second-moment factors.

    optimizer = BasisRotation(matrices, lr=1e-3, betas=(0.9, 0.95), every=10, sides="both")

For every 2-D weight W (r x c) with gradient g, at its t-th update (t = 1, 2, ...):

    L <- b L + (1-b) g g^T            R <- b R + (1-b) g^T g             (b = beta2 unless set)
    if (t - 1) % T == 0: refresh Q_L, Q_R
    m <- beta1 m + (1-beta1) g                                            (original coordinates)
    m~ = Q_L^T m Q_R          g~ = Q_L^T g Q_R
    v <- beta2 v + (1-beta2) g~^2                                         (rotated coordinates)
    W <- W - lr wd W - lr sqrt(1-beta2^t)/(1-beta1^t) Q_L (m~ / (sqrt(v) + eps)) Q_R^T

Refresh: the first time, Q = the eigenvectors of X (L or R) by descending eigenvalue. Afterwards one QR
power-iteration step: the columns of Q (and the matching axis of v: rows for Q_L, columns for Q_R) are
sorted by descending diag(Q^T X Q), then Q <- QR(X Q). Sorting before the QR step (as SOAP does) keeps the
dominant directions first, where Gram-Schmidt leaves them untouched.

One-sided variant (sides="one"): only the smaller side is rotated (the left one when r <= c); the other
side is the identity and keeps no factor. Extra memory: 2(r^2 + c^2) floats per matrix when both-sided.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

SIDES = ("both", "one")


class BasisRotation(torch.optim.Optimizer):
    """The rotated Adam above for 2-D parameters only; all state lives in `self.state` (state_dict works)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        every: int = 10,
        beta: float | None = None,
        sides: str = "both",
    ) -> None:
        if sides not in SIDES:
            raise ValueError(f"sides must be one of {SIDES}, got {sides!r}")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, every=every, beta=beta, sides=sides
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.ndim != 2:
                    raise ValueError(f"basis rotation takes 2-D parameters only, got shape {parameter.shape}")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    self._update(parameter, parameter.grad, group, self.state[parameter])
        return loss

    def _update(self, weight: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        beta1, beta2 = group["betas"]
        if not state:
            _init_state(state, weight, group["sides"])
        state["step"] += 1
        t = state["step"]
        _accumulate_factors(state, grad, beta2 if group["beta"] is None else group["beta"])
        if (t - 1) % group["every"] == 0:
            _refresh(state, first=t == 1)
        state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
        m_rotated = _rotate(state["m"], state)
        g_rotated = _rotate(grad, state)
        state["v"].mul_(beta2).addcmul_(g_rotated, g_rotated, value=1 - beta2)
        direction = _unrotate(m_rotated / (state["v"].sqrt() + group["eps"]), state)
        scale = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        weight.mul_(1 - group["lr"] * group["weight_decay"]).add_(direction, alpha=-scale)


def rotated_sides(rows: int, cols: int, sides: str) -> tuple[str, ...]:
    """Which sides a (rows x cols) matrix rotates: both, or the smaller one (left on a tie)."""
    if sides == "both":
        return ("left", "right")
    return ("left",) if rows <= cols else ("right",)


def _init_state(state: dict, weight: torch.Tensor, sides: str) -> None:
    state["step"] = 0
    state["m"] = torch.zeros_like(weight)
    state["v"] = torch.zeros_like(weight)
    rows, cols = weight.shape
    for side in rotated_sides(rows, cols, sides):
        size = rows if side == "left" else cols
        state[f"factor_{side}"] = weight.new_zeros(size, size)
        state[f"basis_{side}"] = torch.eye(size, dtype=weight.dtype, device=weight.device)


def _accumulate_factors(state: dict, grad: torch.Tensor, beta: float) -> None:
    if "factor_left" in state:
        state["factor_left"].mul_(beta).add_(grad @ grad.T, alpha=1 - beta)
    if "factor_right" in state:
        state["factor_right"].mul_(beta).add_(grad.T @ grad, alpha=1 - beta)


def _refresh(state: dict, *, first: bool) -> None:
    """New bases: eigendecomposition the first time, then one sorted QR power-iteration step."""
    for side, axis in (("left", 0), ("right", 1)):
        if f"factor_{side}" not in state:
            continue
        factor = state[f"factor_{side}"]
        if first:
            state[f"basis_{side}"] = eigenbasis(factor)
            continue
        basis, order = power_step(factor, state[f"basis_{side}"])
        state[f"basis_{side}"] = basis
        state["v"] = state["v"].index_select(axis, order)


def eigenbasis(factor: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of a symmetric matrix as columns, by descending eigenvalue."""
    _, vectors = torch.linalg.eigh(factor)
    return vectors.flip(1).contiguous()


def power_step(factor: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort basis columns by descending diag(Q^T X Q), then one step Q <- QR(X Q); returns (Q, order)."""
    estimates = (basis * (factor @ basis)).sum(dim=0)  # diag(Q^T X Q) without the full product
    order = torch.argsort(estimates, descending=True, stable=True)
    basis, _ = torch.linalg.qr(factor @ basis[:, order])
    return basis, order


def _rotate(matrix: torch.Tensor, state: dict) -> torch.Tensor:
    """Q_L^T matrix Q_R (a missing side is the identity)."""
    if "basis_left" in state:
        matrix = state["basis_left"].T @ matrix
    if "basis_right" in state:
        matrix = matrix @ state["basis_right"]
    return matrix


def _unrotate(matrix: torch.Tensor, state: dict) -> torch.Tensor:
    """Q_L matrix Q_R^T (a missing side is the identity)."""
    if "basis_left" in state:
        matrix = state["basis_left"] @ matrix
    if "basis_right" in state:
        matrix = matrix @ state["basis_right"].T
    return matrix

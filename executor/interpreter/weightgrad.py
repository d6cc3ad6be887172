"""Deferred weight gradients for split backwards (I, then W), after zero-bubble's WeightGradStore.

    sink = WeightGrads(tensors)                 # what the forward reads: live params or snapshot leaves
    with sink.recording(module):                # the forward: every model.Linear goes through DeferredLinear
        out = module(x)
    grad_x, others = sink.backward_input(out, grad, x)   # the I: the input-gradient chain, graph freed
    grads = sink.weight_grads()                 # the W: only the stored weight-gradient GEMMs

Note: who computes what, per Linear y = x W^T + b of a stage, and per other parameter (LayerNorm, embedding):

    I   grad_x = grad_y W                       at once (the chain down to the stage input)
        (x, grad_y) stored                      the closure of this Linear's weight gradient
        other parameters' gradients             at once (on the chain's way), held until W
    W   grad_W = grad_y^T x,  grad_b = sum grad_y     the stored closures only, no autograd pass
        everything accumulated once, in parameter order, into the live parameters' .grad

A forward that no split backward reads never enters `recording`: model.Linear is then plain nn.Linear, so
B (full backward) schedules run exactly the code they ran before this module existed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from executor.training.model import Linear

Slots = tuple[int, int | None]  # positions of a Linear's weight and bias in WeightGrads.tensors


class DeferredLinear(torch.autograd.Function):
    """F.linear whose backward defers the weight gradient to the sink while the sink says so."""

    @staticmethod
    def forward(ctx, x, weight, bias, sink: WeightGrads, slots: Slots):
        ctx.save_for_backward(x, weight)
        ctx.sink, ctx.slots = sink, slots
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_out.matmul(weight) if ctx.needs_input_grad[0] else None
        if ctx.sink.defer:
            ctx.sink.pending.append((ctx.slots, x, grad_out))
            return grad_x, None, None, None, None
        grad_weight, grad_bias = linear_weight_grads(x, grad_out, with_bias=ctx.slots[1] is not None)
        return grad_x, grad_weight, grad_bias, None, None


def linear_weight_grads(
    x: torch.Tensor, grad_out: torch.Tensor, *, with_bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """d loss / d (W, b) of y = x W^T + b, from the Linear's input and output gradient (any leading dims)."""
    grad_2d = grad_out.reshape(-1, grad_out.shape[-1])
    grad_weight = grad_2d.t().mm(x.reshape(-1, x.shape[-1]))
    return grad_weight, grad_2d.sum(0) if with_bias else None


class WeightGrads:
    """One forward's split backward: which tensors it read, the deferred closures, the early gradients."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors
        self.position = {id(tensor): index for index, tensor in enumerate(tensors)}
        self.linear_slots: set[int] = set()
        self.calls = 0
        self.defer = False
        self.pending: list[tuple[Slots, torch.Tensor, torch.Tensor]] = []
        self.early: dict[int, torch.Tensor] = {}
        self.ready = False
        """True once the I has run: the W then only runs the pending closures."""

    @contextmanager
    def recording(self, module: nn.Module) -> Iterator[None]:
        """Route every model.Linear of `module` through DeferredLinear for the forward run inside."""
        linears = [m for m in module.modules() if isinstance(m, Linear)]
        for linear in linears:
            linear.sink = self
        try:
            yield
        finally:
            for linear in linears:
                del linear.sink  # back to the class default (None): plain nn.Linear

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        slots = (self.position[id(weight)], None if bias is None else self.position[id(bias)])
        self.linear_slots.update(slot for slot in slots if slot is not None)
        self.calls += 1
        return DeferredLinear.apply(x, weight, bias, self, slots)

    def backward_input(
        self, out: torch.Tensor, grad: torch.Tensor | None, x: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The I: d out / d x (None without x); other parameters' gradients kept, the Linears' deferred."""
        others = [slot for slot in range(len(self.tensors)) if slot not in self.linear_slots]
        targets = ([x] if x is not None else []) + [self.tensors[slot] for slot in others]
        if not targets:
            return None  # nothing reaches back: the W falls back to one full pass (not ready)
        self.defer = True
        try:
            grads = torch.autograd.grad(out, targets, grad, allow_unused=True)
        finally:
            self.defer = False
        if len(self.pending) != self.calls:
            raise RuntimeError(f"only {len(self.pending)} of {self.calls} Linear backwards ran in the I")
        parameter_grads = zip(others, grads[len(targets) - len(others) :], strict=True)
        self.early = {slot: g for slot, g in parameter_grads if g is not None}
        self.ready = True
        return grads[0] if x is not None else None

    def weight_grads(self) -> list[torch.Tensor | None]:
        """The W: every tensor's gradient (None where unused), from the early ones and the closures."""
        grads: list[torch.Tensor | None] = [self.early.get(slot) for slot in range(len(self.tensors))]
        for (weight, bias), x, grad_out in self.pending:
            grad_weight, grad_bias = linear_weight_grads(x, grad_out, with_bias=bias is not None)
            for slot, value in ((weight, grad_weight), (bias, grad_bias)):
                if slot is not None:
                    grads[slot] = value if grads[slot] is None else grads[slot] + value
        self.pending, self.early = [], {}
        return grads

"""What one backward op computes from the record its forward left (executor.runtime runs it).

    grad_x, finished = run_backward(state, record, want_input=True, want_weights=False)   # an I

Note: what each backward computes, per kind (x: the stage's input, out: its output or scaled loss):

    B   d out / d x  and  d out / d weights      (one autograd pass)
    I   d out / d x, the Linears' weight-gradient closures stored, graph freed   (executor.weightgrad)
    W   d out / d weights: the stored weight-gradient GEMMs only, no autograd pass
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executor.stage import StageState, lent
from executor.versions import accumulate
from executor.weightgrad import WeightGrads


@dataclass
class Forward:
    """A forward whose backward has not finished: what the backward needs."""

    x: torch.Tensor
    out: torch.Tensor
    leaves: list[torch.Tensor] | None
    version: int
    grad: torch.Tensor | None = None
    sink: WeightGrads | None = None
    """Set where an I/W pair differentiates this forward: what the I defers to the W."""


def run_backward(
    state: StageState, record: Forward, *, want_input: bool, want_weights: bool
) -> tuple[torch.Tensor | None, bool]:
    """(d out / d x where wanted and there is one, whether the record is done with: its last backward
    ran). Weight gradients go into the stage's gradient buffers."""
    sink = record.sink
    if sink is not None and not want_weights:  # an I: the chain now, the weight GEMMs kept for its W
        return sink.backward_input(record.out, record.grad, None if state.first else record.x), False
    if sink is not None and sink.ready:  # its W: the stored GEMMs only
        accumulate(state.params, sink.weight_grads())
        return None, True
    return _autograd_backward(state, record, want_input, want_weights)


def _autograd_backward(
    state: StageState, record: Forward, want_input: bool, want_weights: bool
) -> tuple[torch.Tensor | None, bool]:
    """B (or a W whose I deferred nothing): one autograd pass."""
    want_input = want_input and not state.first
    targets = ([record.x] if want_input else []) + ((record.leaves or state.params) if want_weights else [])
    if not targets:  # the first stage's I: nothing to compute, the W does it all
        return None, False
    if not want_weights:  # an I without a sink: d out / d x, the graph kept for its W
        return torch.autograd.grad(record.out, targets, record.grad, retain_graph=True)[0], False
    # Autograd accumulates into the gradient buffer itself: a forward on leaves (a stashed or frozen
    # version) gets the buffer lent to its leaves for the pass. Without `inputs` where every leaf of
    # the graph is wanted (the input unless it holds token ids, and all weights): its per-tensor
    # set-up, or autograd.grad's and a Python loop of additions, cost a tenth of a small backward.
    every = want_input or state.first
    with lent(state.params, record.leaves):
        torch.autograd.backward(record.out, record.grad, inputs=None if every else targets)
    return (record.x.grad if want_input else None), True

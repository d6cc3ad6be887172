"""What the compute ops compute: which weights a forward runs on, its graph, and each kind of backward
from the record that forward left (executor.interpreter.runtime runs them; a resumed rank recomputes
its forwards with them).

    leaves = weights_for(state, version, frozen=False, forwards=in_flight)   # None: the parameters
    record = run_forward(state, x, leaves, version=version, split=False)
    grad_x, finished = run_backward(state, record, want_input=True, want_weights=False)   # an I

Note: what each backward computes, per kind (x: the stage's input, out: its output or scaled loss):

    B   d out / d x  and  d out / d weights      (one autograd pass)
    I   d out / d x, the Linears' weight-gradient closures stored, graph freed   (interpreter.weightgrad)
    W   d out / d weights: the stored weight-gradient GEMMs only, no autograd pass
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from executor.interpreter.memory import SavedBytes
from executor.interpreter.program import MicrobatchKey
from executor.interpreter.stage import StageState, lent
from executor.interpreter.versions import accumulate
from executor.interpreter.weightgrad import WeightGrads


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


def weights_for(
    state: StageState, version: int, frozen: bool, forwards: Mapping[MicrobatchKey, Forward]
) -> list[torch.Tensor] | None:
    """Leaves for a forward of `version`, or None: run on the parameters, made to hold it if they
    may (2BW: the older buffer, worn for the rest of the minibatch, see StageState.wear). A frozen
    forward always gets leaves: an update comes before its backward. `forwards`: those in flight."""
    if frozen:
        return state.leaves(version, frozen=True)
    wearable = version == state.store.live or version in state.store.old
    if version != state.holds and state.store.copy_on_write and wearable and not reading(state, forwards):
        state.wear(version)
    return None if version == state.holds else state.leaves(version, frozen=False)


def reading(state: StageState, forwards: Mapping[MicrobatchKey, Forward]) -> bool:
    """Whether a graph in flight reads the stage's parameters themselves (not leaves)."""
    return any(key.stage == state.stage and r.leaves is None for key, r in forwards.items())


def unwear(state: StageState, forwards: Mapping[MicrobatchKey, Forward]) -> None:
    """Give the parameters back their live version (none of the `forwards` in flight may read them)."""
    if state.worn is not None:
        if reading(state, forwards):
            raise RuntimeError(
                f"stage {state.stage}: its live weights are needed while a graph reads version {state.worn}"
            )
        state.unwear()


def run_forward(
    state: StageState, x: torch.Tensor, leaves: list[torch.Tensor] | None, *, version: int, split: bool
) -> Forward:
    """Run the stage on `x`, on its parameters (`leaves` None) or on `leaves` holding `version`; `split`:
    an I/W pair differentiates it (the Linears' inputs are recorded for the W). The first forward of a
    stage measures what autograd saves per forward (StageState.saved_bytes)."""
    sink = WeightGrads(leaves or state.params) if split else None
    with sink.recording(state.module) if sink is not None else nullcontext():
        if state.saved_bytes is None:
            with SavedBytes(state) as counter:
                out = _call(state, x, leaves)
            state.saved_bytes = counter.total
        else:
            out = _call(state, x, leaves)
    return Forward(x=x, out=out, leaves=leaves, version=version, sink=sink)


def _call(state: StageState, x: torch.Tensor, leaves: list[torch.Tensor] | None) -> torch.Tensor:
    return state.module(x) if leaves is None else state.call(x, leaves)


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

"""Memory accounting of one rank on CPU: the bytes of the tensors it holds (as docs/cost-model.md counts
them: weights x versions, optimizer state, gradients, stashed activations, received tensors). On CUDA the
allocator's count.

    runtime.held_bytes()        # after every op, into the trace's `memory`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from executor.runtime import Runtime
    from executor.stage import StageState


def held_bytes(runtime: Runtime) -> int:
    """Bytes `runtime` holds: weights x versions, gradients, optimizer state, the activations autograd
    saved for the backwards still to come, and received tensors not yet consumed."""
    if runtime.settings.device.type == "cuda":
        return torch.cuda.memory_allocated(runtime.settings.device)
    stages = runtime.stages
    if runtime.grad_bytes is None:  # after an op that may have changed a gradient buffer (or at the start)
        grads = [p.grad for state in stages.values() for p in state.params]
        runtime.grad_bytes = sum(grad.nbytes for grad in grads if grad is not None)
        runtime.grads_complete = all(grad is not None for grad in grads)
    total = runtime.optimizer_bytes + runtime.grad_bytes
    for state in stages.values():
        total += state.store.held_bytes()
    if len(stages) == 1:  # the common case: every forward in flight is the one stage's
        (state,) = stages.values()
        total += (state.saved_bytes or 0) * len(runtime.forwards)
    else:
        for stage, _, _ in runtime.forwards:
            total += stages[stage].saved_bytes or 0
    for pending in (runtime.inputs, runtime.grads, runtime.grad_out):
        for tensor in pending.values():
            total += tensor.nbytes
    return total


class SavedBytes:
    """Counts the bytes autograd saves during one forward, weights excluded (saved_tensors_hooks)."""

    def __init__(self, state: StageState) -> None:
        self.weights = {p.untyped_storage().data_ptr() for p in state.params}
        self.weights |= {t.untyped_storage().data_ptr() for ts in state.store.old.values() for t in ts}
        self.seen: set[int] = set()
        self.total = 0
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self.weights and pointer not in self.seen:
            self.seen.add(pointer)
            self.total += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedBytes:
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)

"""Memory accounting of one rank on CPU: the bytes of the tensors it holds (as docs/cost-model.md counts
them: weights x versions, optimizer state, gradients, stashed activations, received tensors). On CUDA the
allocator's count.

    runtime.held_bytes()        # after every op, into the trace's `memory`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from executor.runtime import Runtime, StageState


def held_bytes(runtime: Runtime) -> int:
    """Bytes `runtime` holds: weights x versions, gradients, optimizer state, the activations autograd
    saved for the backwards still to come, and received tensors not yet consumed."""
    if runtime.settings.device.type == "cuda":
        return torch.cuda.memory_allocated(runtime.settings.device)
    total = runtime.optimizer_bytes
    for state in runtime.stages.values():
        total += state.store.held_bytes()
        total += sum(p.grad.nbytes for p in state.params if p.grad is not None)
    for stage, _, _ in runtime.forwards:
        total += runtime.stages[stage].saved_bytes or 0
    for pending in (runtime.inputs, runtime.grads, runtime.grad_out):
        total += sum(t.nbytes for t in pending.values())
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

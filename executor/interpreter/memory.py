"""Memory accounting of one rank: the bytes of the tensors it holds (as docs/cost-model.md counts them:
weights x versions, optimizer state, gradients, stashed activations, received tensors), or, on a GPU of
its own, the CUDA allocator's count (which also sees workspaces and temporaries).

    memory = MemoryCount(stages, None)                   # count the tensors (CPU, ranks sharing a GPU)
    memory = MemoryCount(stages, torch.device("cuda", 0))  # ask the allocator of this GPU
    memory.held(forwards, (inputs, grads, grad_out))     # after every op, into the trace's `memory`
    memory.grads_changed(2)                              # after an op that emptied the gradient buffers
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from executor.interpreter.program import MicrobatchKey
from executor.interpreter.stage import StageState


class MemoryCount:
    """The bytes one rank holds, with the counts that change rarely kept between ops."""

    def __init__(self, stages: dict[int, StageState], allocator: torch.device | None) -> None:
        self.stages, self.allocator = stages, allocator
        """The CUDA device whose allocator count is the rank's memory, or None: count the tensors."""
        self.grad_bytes: int | None = None
        """Bytes of the gradient buffers, counted again after an op that may change them."""
        self.grads_complete = False
        """Every parameter had a gradient buffer when they were last counted (adding changes no size)."""
        self.optimizer_bytes = 0
        self.optimizer_changed()

    def optimizer_changed(self) -> None:
        """Count the optimizer state again (after an update, or a restore)."""
        self.optimizer_bytes = sum(s.optimizer.state_bytes() for s in self.stages.values() if s.optimizer)

    def grads_changed(self, how: int) -> None:
        """After an op that adds into the gradient buffers (1) or empties them (2): count them again
        where that may change their size (any emptying; an addition while some are missing)."""
        if how > self.grads_complete:
            self.grad_bytes = None

    def held(self, forwards: Mapping[MicrobatchKey, object], pending: Iterable[Mapping]) -> int:
        """Bytes held: weights x versions, gradients, optimizer state, the activations autograd saved for
        the `forwards` whose backward is still to come, and the `pending` received tensors."""
        if self.allocator is not None:
            return torch.cuda.memory_allocated(self.allocator)
        stages = self.stages
        if self.grad_bytes is None:  # after an op that may have changed a gradient buffer (or at the start)
            grads = [p.grad for state in stages.values() for p in state.params]
            self.grad_bytes = sum(grad.nbytes for grad in grads if grad is not None)
            self.grads_complete = all(grad is not None for grad in grads)
        total = self.optimizer_bytes + self.grad_bytes
        for state in stages.values():
            total += state.store.held_bytes()
        if len(stages) == 1:  # the common case: every forward in flight is the one stage's
            (state,) = stages.values()
            total += (state.saved_bytes or 0) * len(forwards)
        else:
            for key in forwards:
                total += stages[key.stage].saved_bytes or 0
        for tensors in pending:
            for tensor in tensors.values():
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

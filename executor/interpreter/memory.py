"""Memory accounting of one rank: the bytes of the tensors it holds (as docs/cost-model.md counts them:
weights x versions, optimizer state, gradients, stashed activations, received tensors), or, on a GPU of
its own, the CUDA allocator's count (which also sees workspaces and temporaries).

    memory = MemoryCount(stages, None)                   # count the tensors (CPU, ranks sharing a GPU)
    memory = MemoryCount(stages, torch.device("cuda", 0))  # ask the allocator of this GPU
    memory.held(forwards, (inputs, grads, grad_out))     # after every op, into the trace's `memory`
    memory.grads_changed(2)                              # after an op that emptied the gradient buffers
    memory.weights_changed()                             # after an op that kept or released a version
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from executor.interpreter.program import MicrobatchKey
from executor.interpreter.stage import StageState


class MemoryCount:
    """The bytes one rank holds, with the counts that change rarely kept between ops.

    Note: what `held` adds after every op, and what it keeps between ops:

        weights x versions + gradient buffers + optimizer state     kept (`base`); counted again only
                                                                     after an op that says it changed
                                                                     one (the three *_changed calls)
        + activations saved x forwards in flight                     per op: a length (one stage)
        + received tensors not consumed yet                          per op: a few, received late

    Integers, so the order of the sums changes nothing: the same bytes as adding every part up after
    every op (tests/executor/test_overhead.py runs both side by side).
    """

    def __init__(self, stages: dict[int, StageState], allocator: torch.device | None) -> None:
        self.stages, self.allocator = stages, allocator
        """The CUDA device whose allocator count is the rank's memory, or None: count the tensors."""
        self.only = next(iter(stages.values())) if len(stages) == 1 else None
        """The rank's one stage (the common case: every forward in flight is its), or None."""
        self.grad_bytes: int | None = None
        """Bytes of the gradient buffers, counted again after an op that may change them."""
        self.grads_complete = False
        """Every parameter had a gradient buffer when they were last counted (adding changes no size)."""
        self.optimizer_bytes = 0
        self.base: int | None = None
        """Weight versions, gradient buffers and optimizer state together; None: count at the next `held`."""
        self.optimizer_changed()

    def optimizer_changed(self) -> None:
        """Count the optimizer state again (after an update, or a restore)."""
        self.optimizer_bytes = sum(s.optimizer.state_bytes() for s in self.stages.values() if s.optimizer)
        self.base = None

    def weights_changed(self) -> None:
        """After an op that kept or released a weight version (an update, received weights, a release)."""
        self.base = None

    def grads_changed(self, how: int) -> None:
        """After an op that adds into the gradient buffers (1) or empties them (2): count them again
        where that may change their size (any emptying; an addition while some are missing)."""
        if how > self.grads_complete:
            self.grad_bytes = self.base = None

    def held(self, forwards: Mapping[MicrobatchKey, object], pending: Iterable[Mapping]) -> int:
        """Bytes held: weights x versions, gradients, optimizer state, the activations autograd saved for
        the `forwards` whose backward is still to come, and the `pending` received tensors."""
        if self.allocator is not None:
            return torch.cuda.memory_allocated(self.allocator)
        total = self.base
        if total is None:
            total = self.base = self._base()
        only = self.only
        if only is not None:
            total += (only.saved_bytes or 0) * len(forwards)
        else:
            stages = self.stages
            for key in forwards:
                total += stages[key.stage].saved_bytes or 0
        for tensors in pending:
            if tensors:
                for tensor in tensors.values():
                    total += tensor.nbytes
        return total

    def _base(self) -> int:
        stages = self.stages
        if self.grad_bytes is None:  # after an op that may have changed a gradient buffer (or at the start)
            grads = [p.grad for state in stages.values() for p in state.params]
            self.grad_bytes = sum(grad.nbytes for grad in grads if grad is not None)
            self.grads_complete = all(grad is not None for grad in grads)
        weights = sum(state.store.held_bytes() for state in stages.values())
        return self.optimizer_bytes + self.grad_bytes + weights


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

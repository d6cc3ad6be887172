"""One stage held by a rank: its module, weight versions and optimizer, and what a forward of a given
version runs on.

    state = StageState(stage=0, module=module, store=VersionStore(module), optimizer=None, ...)
    leaves = state.leaves(version, frozen=True)     # leaves over a kept or aliased copy (VersionStore)
    state.wear(version)                             # or: the parameters themselves hold that version
    out = state.call(x, leaves)                     # the module on the leaves instead of its parameters
    with lent(state.params, leaves): autograd.backward(out, grad)   # into the gradient buffer itself

Note: three ways a forward can read weight version v of a stage (executor.interpreter.runtime decides which):

    the parameters   v is live, or worn (2BW's older buffer): module(x), autograd accumulates straight
                     into param.grad; only while no update comes before the backward
    shared leaves    v is kept (copy on write) or frozen (an update comes first): fresh autograd leaves
                     over v's storage, one set for all forwards on v; the backward lends them param.grad
    own leaves       CURRENT (AMDP): the update writes in place, so each forward gets its own
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from executor.interpreter.versions import VersionStore


@dataclass
class StageState:
    """One stage held by this rank: its module, weight versions and (owner only) optimizer."""

    stage: int
    module: nn.Module
    store: VersionStore
    optimizer: object | None
    first: bool
    last: bool
    saved_bytes: int | None = None
    """Bytes autograd saves per forward, excluding weights (measured on the first forward)."""
    slots: list[tuple[dict, str]] | None = None
    """Where each parameter sits: (its module's _parameters, its name there), in store order."""
    shared: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    """version -> the leaves every forward on it reads (copy-on-write stores: see `leaves`)."""
    live: list[torch.Tensor] | None = None
    """While the parameters wear an older version (see `wear`): the live version's tensors."""
    worn: int | None = None
    """The older version the parameters wear, or None: they hold the live one."""

    @property
    def params(self) -> list[torch.Tensor]:
        return self.store.params

    @property
    def holds(self) -> int:
        """The version the parameters hold now."""
        return self.store.live if self.worn is None else self.worn

    def leaves(self, version: int, *, frozen: bool) -> list[torch.Tensor] | None:
        """What a forward of `version` runs on (VersionStore.leaves). With copy on write a version's
        storage is never written, so its forwards share one set of leaves (and their gradient
        accumulators) until it is released, instead of making their own."""
        store = self.store
        if not store.copy_on_write or (version == store.live and not frozen and self.worn is None):
            return store.leaves(version, frozen=frozen)
        shared = self.shared.get(version)
        if shared is None:
            if version == store.live and self.live is not None:  # worn: the live tensors are put aside
                shared = [tensor.data.requires_grad_() for tensor in self.live]
            else:
                shared = store.leaves(version, frozen=frozen)
            self.shared[version] = shared
        return shared

    def wear(self, version: int) -> None:
        """Make the parameters hold `version` (the live one, or a kept older one of a copy-on-write
        store, never written), so forwards on it run on the module itself: autograd then accumulates
        straight into the gradient buffer, as for the live version. Only while no graph reads the
        parameters (they would see the swap)."""
        live = self.live if self.live is not None else [param.data for param in self.params]
        target = live if version == self.store.live else self.store.old[version]
        for param, tensor in zip(self.params, target, strict=True):
            param.data = tensor
        self.live, self.worn = (None, None) if version == self.store.live else (live, version)

    def unwear(self) -> None:
        """Give the parameters back their live version (before anything that reads or writes it)."""
        if self.worn is not None:
            self.wear(self.store.live)

    def release(self, version: int) -> None:
        if self.worn == version:
            self.unwear()
        self.store.release(version)
        self.shared.pop(version, None)

    def call(self, x: torch.Tensor, leaves: list[torch.Tensor]) -> torch.Tensor:
        """The module on `x` with its parameters replaced by `leaves` for this call: what
        torch.func.functional_call does (the same swap, the same ops and graph) without its setup, which
        doubled the cost of a small stage's forward."""
        if self.slots is None:
            self.slots = _parameter_slots(self.module, self.store.names)
        live = [table[name] for table, name in self.slots]
        for (table, name), leaf in zip(self.slots, leaves, strict=True):
            table[name] = leaf
        try:
            return self.module(x)
        finally:
            for (table, name), param in zip(self.slots, live, strict=True):
                table[name] = param


def _parameter_slots(module: nn.Module, names: list[str]) -> list[tuple[dict, str]]:
    """(module._parameters, name) for each named parameter; refuses tied (shared) parameters, which a
    swap by name would replace in one place only."""
    slots = []
    for full in names:
        owner, _, name = full.rpartition(".")
        slots.append((module.get_submodule(owner)._parameters, name))
    held = [id(table[name]) for table, name in slots]
    every = [id(p) for m in module.modules() for p in m._parameters.values() if p is not None]
    if sorted(held) != sorted(every):
        raise RuntimeError("a stage with tied parameters cannot run on a stashed version")
    return slots


@contextmanager
def lent(params: list[torch.Tensor], leaves: list[torch.Tensor] | None) -> Iterator[None]:
    """Lend each parameter's gradient buffer to the leaf a forward read instead of it, for one backward:
    autograd adds into it in place (or makes it, where there was none), as it would into the parameter's."""
    if leaves is None:
        yield
        return
    for leaf, param in zip(leaves, params, strict=True):
        leaf.grad = param.grad
    try:
        yield
    finally:
        for leaf, param in zip(leaves, params, strict=True):
            param.grad, leaf.grad = leaf.grad, None

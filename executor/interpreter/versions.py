"""Weight versions of one stage (docs/schedules.md): the live parameters plus the older versions still read.

    store = VersionStore(module)
    leaves = store.leaves(version, frozen=True)   # None: run the module on its live parameters
    store.update(keep_old=True, apply=optimizer_step)

Note: how a version stays immutable while autograd holds it (copy on write):

    forward j reads v (live)      leaves alias the live storage S_v (their own version counter)
    update v -> v+1, keep_old     old[v] = S_v; the parameters move to a copy S'; the step writes S'
    backward j                    reads S_v through its graph: untouched

    CURRENT (AMDP, no stashing): the update writes S_v in place, so an in-flight backward reads the
    newest weights (the one-step mismatch of the reference code); nothing is copied unless a checkpoint
    needs the old values to recompute an in-flight forward on resume.

FLUSH keeps one version; STASH (PipeDream) up to P-s; DOUBLE_BUFFER (2BW) two.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class VersionStore:
    """The versions of one stage's weights; `live` is the number of updates applied so far."""

    def __init__(self, module: nn.Module, *, copy_on_write: bool = True) -> None:
        self.names = [name for name, _ in module.named_parameters()]
        self.params = [param for _, param in module.named_parameters()]
        self.live = 0
        self.old: dict[int, list[torch.Tensor]] = {}
        self.copy_on_write = copy_on_write
        self.param_bytes = sum(param.nbytes for param in self.params)

    def leaves(self, version: int, *, frozen: bool) -> list[torch.Tensor] | None:
        """Tensors to run a forward of `version` on, as fresh autograd leaves; None: use the module itself.

        A kept old version gives leaves over its (never written) storage; a frozen forward of the live
        version gives leaves that alias the live storage without sharing its version counter.
        """
        if version != self.live:
            if version not in self.old:
                raise RuntimeError(f"weight version {version} is not held (live {self.live})")
            return [tensor.detach().requires_grad_() for tensor in self.old[version]]
        if not frozen:
            return None
        return [param.data.requires_grad_() for param in self.params]

    def update(self, *, keep_old: bool, apply: Callable[[], None]) -> int:
        """Run `apply` (an in-place write of the parameters) as update live -> live + 1."""
        if keep_old:
            if self.copy_on_write:
                self.old[self.live] = [param.data for param in self.params]
                for param in self.params:
                    param.data = param.data.clone()
            else:
                self.old[self.live] = [param.detach().clone() for param in self.params]
        apply()
        self.live += 1
        return self.live

    def release(self, version: int) -> None:
        self.old.pop(version, None)

    def held(self) -> int:
        """Weight copies held (the live one and the kept old ones)."""
        return 1 + len(self.old)

    def held_bytes(self) -> int:
        return self.held() * self.param_bytes

    @torch.no_grad()
    def swap_in(self, version: int) -> list[torch.Tensor]:
        """Write old version `version` into the live storage; returns the live values to swap back."""
        saved = [param.detach().clone() for param in self.params]
        for param, tensor in zip(self.params, self.old[version], strict=True):
            param.data.copy_(tensor)
        return saved

    @torch.no_grad()
    def swap_out(self, saved: list[torch.Tensor]) -> None:
        for param, tensor in zip(self.params, saved, strict=True):
            param.data.copy_(tensor)

    def state_dict(self) -> dict:
        return {
            "live": self.live,
            "params": [param.detach().clone() for param in self.params],
            "old": {version: [t.clone() for t in tensors] for version, tensors in self.old.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.live = state["live"]
        for param, tensor in zip(self.params, state["params"], strict=True):
            param.data = tensor.to(param.device).clone()
        self.old = {
            int(version): [t.to(self.params[0].device) for t in tensors]
            for version, tensors in state["old"].items()
        }


@torch.no_grad()
def accumulate(params: list[torch.Tensor], grads) -> None:
    """Add weight gradients into the stage's gradient buffer (param.grad), as autograd would."""
    for param, grad in zip(params, grads, strict=True):
        if grad is None:
            continue
        if param.grad is None:
            param.grad = grad.clone()
        else:
            param.grad += grad


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for tensor in like:
        out.append(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()
    return out

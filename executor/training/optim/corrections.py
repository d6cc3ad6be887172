"""The one-step delay correction, optimizer-agnostic: it watches what the base optimizer did and extends it.

    correction = DelayCorrection(parameters, lam=0.5)
    correction.before()        # remember W
    base_optimizer.step()      # W -> W + u_t  (u_t: the base update from the delayed gradient)
    correction.after()         # W -> W + u_t + lam (u_t - u_{t-1})

The rule (our inference; the one-step-delay paper's equation is not public, see docs/optimizers.md):

    Delta_t = u_t + lambda (u_t - u_{t-1}),     u_t = W_after_base_step - W_before

u_t is measured, so it includes weight decay and whatever the base optimizer does; u_{t-1} is the previous
*base* update (not the corrected one). With one step of delay, u_t answers the gradient at W(t-1), and the
difference term extrapolates the update sequence one step forward. The first update has no predecessor and
is left as it is (Delta_0 = u_0). PipeMare, the other correction, only scales the learning rate: see
executor.training.optim.schedule.pipemare_lr.
"""

from __future__ import annotations

import torch


class DelayCorrection:
    """Delta_t = u_t + lam (u_t - u_{t-1}) around any base optimizer; memory: two copies of the weights."""

    def __init__(self, parameters: list[torch.Tensor], lam: float) -> None:
        self.parameters = parameters
        self.lam = lam
        self.before_step = [torch.empty_like(parameter) for parameter in parameters]
        self.previous = [torch.zeros_like(parameter) for parameter in parameters]
        self.has_previous = False

    @torch.no_grad()
    def before(self) -> None:
        """Remember the weights the base optimizer is about to change."""
        for saved, parameter in zip(self.before_step, self.parameters, strict=True):
            saved.copy_(parameter)

    @torch.no_grad()
    def after(self) -> None:
        """Measure u_t, add lam (u_t - u_{t-1}), and keep u_t as the next step's u_{t-1}."""
        for saved, previous, parameter in zip(self.before_step, self.previous, self.parameters, strict=True):
            update = saved.neg_().add_(parameter)  # u_t, computed in place of the saved copy
            if self.has_previous:
                parameter.add_(update - previous, alpha=self.lam)
            previous.copy_(update)
        self.has_previous = True

    def state_dict(self) -> dict:
        """The memory u_{t-1} (references, as torch optimizers do) and whether it exists yet."""
        return {"lam": self.lam, "has_previous": self.has_previous, "previous": list(self.previous)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.has_previous = bool(state["has_previous"])
        for previous, saved in zip(self.previous, state["previous"], strict=True):
            previous.copy_(saved)

    def state_bytes(self) -> int:
        """Bytes held: u_{t-1} and the pre-step copy of the weights."""
        return sum(tensor.nbytes for tensor in (*self.previous, *self.before_step))

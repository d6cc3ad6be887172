"""PipeDream-2BW: double-buffered weights, one update per step, a one-step delay (docs/schedules.md).

Same continuous 1F1B stream as PipeDream (no flush between steps), but the gradient of a whole step (m >= P
microbatches) is accumulated and applied once per stage, right after the stage's last backward of that
step (Versioning.DOUBLE_BUFFER). The reference code's rule (backward on the older buffer; forward on the
older buffer for the rest of the current step and on the newer one for the first w_s microbatches of the
next; the update copies newer -> older, applies, swaps) then makes step k read W(k-1) everywhere:

    W(k+1) = W(k) - lr * U(grad f(W(k-1)))      steps 0 and 1 both read W(0)

Note: why the static order realises the rule, stage s, w = w_s, step k (m >= P > w):

    F(k,m-1) B(k,m-1-w) F(k+1,0) B(k,m-w) .. F(k+1,w-1) B(k,m-1) OPT(k) F(k+1,w) B(k+1,0) ..
    |older = W(k-1)      |newer = W(k) for these w forwards |      |older = W(k) from here on
                                                     swap: older = W(k), newer = W(k+1)

    pipesim schedules show 2bw -p 4 -m 8 --steps 3
"""

from __future__ import annotations

from schedules.ir import Schedule, Versioning, linear_layout
from schedules.pipedream import continuous_one_f_one_b


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    """Compute-only 2BW; `lower()` adds one OPT per stage per step and the versions max(0, step - 1)."""
    return Schedule(
        name="2bw",
        layout=linear_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        versioning=Versioning.DOUBLE_BUFFER,
        actions=continuous_one_f_one_b(ranks, microbatches, steps),
    )

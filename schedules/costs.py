"""Per-kind action costs for the dry run and the exact analytics (time units, not seconds).

from schedules.costs import Costs, action_cost
costs = Costs(f=1, b=2)          # the closed forms' costs: t_F = 1, full backward 2, split as I = W = 1

Integers (or fractions.Fraction) keep every timing exact; floats work too.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedules.ir import COMM_KINDS, Action, Kind, Schedule


@dataclass(frozen=True, kw_only=True)
class Costs:
    """How long each kind of action takes on one rank, for a whole model stage (chunks = 1)."""

    f: float = 1.0
    """Forward of one microbatch through one stage (time units)."""
    b: float = 2.0
    """Full backward (inputs and weights) of one microbatch (time units)."""
    i: float | None = None
    """Backward for inputs (time units); None means b / 2."""
    w: float | None = None
    """Backward for weights (time units); None means b / 2."""
    opt: float = 0.0
    """Optimizer step of one stage (time units)."""
    comm: float = 0.0
    """Every send and every receive (time units); a transfer costs its send plus its receive."""

    @property
    def input_backward(self) -> float:
        return self.b / 2 if self.i is None else self.i

    @property
    def weight_backward(self) -> float:
        return self.b / 2 if self.w is None else self.w


def kind_costs(costs: Costs, chunks: int = 1) -> dict[Kind, float]:
    """Cost of every Kind; compute kinds divided by chunks (an interleaved chunk holds 1/v of the layers)."""
    compute = {
        Kind.F: costs.f,
        Kind.B: costs.b,
        Kind.I: costs.input_backward,
        Kind.W: costs.weight_backward,
        Kind.OPT: costs.opt,
    }
    table = {kind: _per_chunk(cost, chunks) for kind, cost in compute.items()}
    table.update({kind: _per_chunk(costs.comm, 1) for kind in COMM_KINDS})
    return table


def _per_chunk(cost: float, chunks: int) -> float:
    """cost / chunks, keeping zeros as the integer 0 so that Fraction costs give Fraction times."""
    if cost == 0:
        return 0
    return cost if chunks == 1 else cost / chunks


def action_cost(costs: Costs, schedule: Schedule, action: Action) -> float:
    """How long one action of this schedule takes."""
    return kind_costs(costs, schedule.chunks)[action.kind]

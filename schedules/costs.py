"""Per-kind action costs for the dry run and the exact analytics (time units, not seconds).

from schedules.costs import Costs, action_cost
costs = Costs(f=1, b=2)          # the closed forms' costs: t_F = 1, full backward 2, split as I = W = 1

Integers (or fractions.Fraction) keep every timing exact; floats work too.

Note: an overlapped pair (OVERLAP_F_B, schedules/semantics.py) takes `overlapped(f, b, x)` =
max(f, b) + x min(f, b) for the whole pair, x = Costs.overlap_f_b (default 1/2: the longer half, plus
half of the shorter one, which the two do not manage to hide). Its halves keep their proportions:

    F (f = 1) and B (b = 2), x = 1/2:   pair 2.5  ->  F 2.5 x 1/3,  B 2.5 x 2/3
"""

from __future__ import annotations

from dataclasses import dataclass

from schedules.ir import COMM_KINDS, Action, Kind, Schedule
from schedules.semantics import overlap_pairs

DEFAULT_OVERLAP_F_B = 0.5
"""Costs.overlap_f_b (and the simulator's CostModel.overlap_f_b) unless told otherwise."""


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
    overlap_f_b: float = DEFAULT_OVERLAP_F_B
    """Share of the shorter half of an OVERLAP_F_B pair that still shows (0: hidden entirely behind
    the longer one, 1: none of it hidden, the two back to back)."""

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
    table[Kind.OVERLAP_F_B] = 0  # the marker takes no time; its halves take the pair's
    return table


def overlapped(forward: float, backward: float, fraction: float) -> float:
    """How long an overlapped forward and backward take together: the longer one plus `fraction` of the
    shorter one (0 <= fraction <= 1)."""
    longer, shorter = (forward, backward) if forward >= backward else (backward, forward)
    return longer + fraction * shorter if shorter else longer


def share_overlap(durations: list[float], actions, fraction: float) -> list[float]:
    """Per-action durations with every overlapped pair's halves scaled to the pair's time, each keeping
    its share (a copy; `durations` as it is when the actions have no OVERLAP_F_B)."""
    pairs = overlap_pairs(actions)
    if not pairs:
        return durations
    out = list(durations)
    for _, forward, backward in pairs:
        if backward < len(out):
            f, b = out[forward], out[backward]
            total = overlapped(f, b, fraction)
            if f + b:
                out[forward], out[backward] = total * f / (f + b), total * b / (f + b)
    return out


def action_costs(costs: Costs, schedule: Schedule) -> list[list[float]]:
    """actions[rank][i]'s duration for every action, overlapped pairs included."""
    table = kind_costs(costs, schedule.chunks)
    return [
        share_overlap([table[a.kind] for a in actions], actions, costs.overlap_f_b)
        for actions in schedule.actions
    ]


def _per_chunk(cost: float, chunks: int) -> float:
    """cost / chunks, keeping zeros as the integer 0 so that Fraction costs give Fraction times."""
    if cost == 0:
        return 0
    return cost if chunks == 1 else cost / chunks


def action_cost(costs: Costs, schedule: Schedule, action: Action) -> float:
    """How long one action of this schedule takes on its own (outside an overlapped pair)."""
    return kind_costs(costs, schedule.chunks)[action.kind]

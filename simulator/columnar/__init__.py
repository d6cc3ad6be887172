"""The simulator at scale: the same model on a schedule held as arrays, for millions of actions.

    from simulator.columnar import simulate_at_scale
    result = simulate_at_scale("1f1b", ranks=1024, microbatches=8192, costs=CostModel.uniform())
    result.metrics.to_dict()          # what Simulation.metrics() reports, to the bit

An Action per entry costs about 150 bytes and a microsecond to make and to walk; 16 million of them do
not fit in a few GiB. Here a lowered schedule is six integer arrays (columns.py), built from the closed
forms of the 1F1B family (generate.py, lower.py) or converted from the IR, checked as validate() checks
it (check.py), priced (plan.py), run round by round over all ranks at once (engine.py), and summarised
(memory.py, staleness.py, summary.py).

The SimPy engine (simulator/engine.py) stays the model of record: tests/simulator/test_columnar.py proves
every stage of this path equal to the IR path, action by action, on every schedule and cost model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.columnar.check import check_columns
from simulator.columnar.columns import Columns, columns_of
from simulator.columnar.engine import run_columns
from simulator.columnar.generate import lowered_columns
from simulator.columnar.memory import memory_columns
from simulator.columnar.plan import ColumnPlan, plan_columns
from simulator.columnar.summary import column_metrics
from simulator.costs import CostModel
from traces.metrics import Metrics

__all__ = ["ColumnSimulation", "Columns", "columns_of", "simulate_at_scale", "simulate_columns"]


@dataclass(frozen=True, kw_only=True, eq=False)
class ColumnSimulation:
    """One simulated run on columns: when every action ran and what each rank held after it."""

    plan: ColumnPlan
    """The columns and the cost model, resolved."""
    starts: np.ndarray
    """float64 seconds, per action (flat, rank-major)."""
    ends: np.ndarray
    """float64 seconds, per action."""
    memory: np.ndarray
    """int64 bytes held right after each action."""
    metrics: Metrics
    """What Simulation.metrics() reports for the same schedule and costs."""


def simulate_columns(columns: Columns, costs: CostModel, *, check: bool = True) -> ColumnSimulation:
    """Validate (unless told not to), plan, run and summarise lowered columns."""
    if check:
        check_columns(columns)
    plan = plan_columns(columns, costs)
    starts, ends = run_columns(plan)
    memory = memory_columns(columns, costs, plan, ends)
    metrics = column_metrics(plan, starts, ends, memory)
    return ColumnSimulation(plan=plan, starts=starts, ends=ends, memory=memory, metrics=metrics)


def simulate_at_scale(
    name: str,
    ranks: int,
    microbatches: int,
    *,
    steps: int = 1,
    chunks: int | None = None,
    costs: CostModel | None = None,
) -> ColumnSimulation:
    """Build the lowered schedule as columns, then simulate_columns."""
    columns = lowered_columns(name, ranks, microbatches, steps, chunks)
    return simulate_columns(columns, costs or CostModel.uniform())

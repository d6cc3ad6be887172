"""The SimPy model: costs, engine, links, memory -> a trace in the shared format, and its metrics.

    from schedules import build
    from simulator import CostModel, simulate
    simulate(build("1f1b", ranks=4, microbatches=8), CostModel.uniform()).metrics().to_dict()

Imports traces and schedules, never the executor. The cost model (costs, costfile, presets, analytic)
loads without SimPy, so commands can describe their flags cheaply; `simulate` loads the engine on first use.
For tens of millions of actions, simulator/columnar runs the same model on arrays (same numbers, tested).
"""

from __future__ import annotations

from typing import Any

from simulator.costs import CostModel, StageCost
from simulator.units import CostError

__all__ = ["CostError", "CostModel", "Simulation", "StageCost", "simulate"]


def __getattr__(name: str) -> Any:
    if name in ("simulate", "Simulation"):  # these pull in SimPy: import them when asked for
        from simulator import simulation

        return getattr(simulation, name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")

"""The SimPy model: costs, engine, links, memory -> a trace in the shared format, and its metrics.

    from schedules import build
    from simulator import CostModel, simulate
    simulate(build("1f1b", ranks=4, microbatches=8), CostModel.uniform()).metrics().to_dict()

Imports traces and schedules, never the executor.
"""

from simulator.costs import CostModel, StageCost
from simulator.simulate import Simulation, simulate
from simulator.units import CostError

__all__ = ["CostError", "CostModel", "Simulation", "StageCost", "simulate"]

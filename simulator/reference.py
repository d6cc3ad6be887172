"""The textbook SimPy model of a schedule, one event per action: the oracle for simulator/engine.py.

    timeline = run_reference(make_plan(schedule, costs))    # same Timeline as engine.run_plan

Each rank is a process that yields a Timeout per compute action and waits for each message's arrival
event; each directed link is a `simpy.Resource(capacity=1)`, so a link carries one transfer at a time
and later transfers queue (first come, first served). With overlap, a send hands its transfer to its own
process (a separate stream) and the rank walks on; without, the rank itself holds the link until the
transfer ends.

It is slow (several events per action) and exists to prove the fast engine right: the two must give the
same start and end for every action, to the bit (tests/simulator/test_engine.py), and to be timed beside
it (benchmarks/bench_simulator.py).
"""

from __future__ import annotations

from collections.abc import Generator

import simpy

from simulator.engine import Timeline
from simulator.plan import COMPUTE, SEND, Plan, SimulationError


class _Network:
    """Directed links as Resources, and one arrival event per message."""

    def __init__(self, env: simpy.Environment, plan: Plan) -> None:
        ranks = plan.schedule.ranks
        self.env = env
        self.links = [simpy.Resource(env, capacity=1) for _ in range(ranks * ranks)]
        self.arrived = [env.event() for _ in range(plan.num_messages)]

    def transfer(
        self, link: int, message: int, seconds: float, times: tuple[list[float], list[float], int]
    ) -> Generator[simpy.Event, None, None]:
        """Hold the link for `seconds`, then deliver the message (times: starts, ends, index to fill)."""
        starts, ends, i = times
        with self.links[link].request() as request:
            yield request
            starts[i] = self.env.now
            yield self.env.timeout(seconds)
            ends[i] = self.env.now
        self.arrived[message].succeed(self.env.now)


def run_reference(plan: Plan) -> Timeline:
    """Simulate the plan event by event; raise SimulationError if a rank never finishes."""
    env = simpy.Environment()
    network = _Network(env, plan)
    starts = [[0.0] * len(classes) for classes in plan.classes]
    ends = [[0.0] * len(classes) for classes in plan.classes]
    processes = [
        env.process(_rank(env, plan, rank, network, starts[rank], ends[rank]))
        for rank in range(plan.schedule.ranks)
    ]
    env.run()
    stuck = [rank for rank, process in enumerate(processes) if process.is_alive]
    if stuck:
        raise SimulationError(f"deadlock: ranks {stuck} never finish")
    return Timeline(starts=starts, ends=ends, makespan=max((max(e) for e in ends if e), default=0.0))


def _rank(
    env: simpy.Environment, plan: Plan, rank: int, network: _Network, starts: list[float], ends: list[float]
) -> Generator[simpy.Event, object, None]:
    overlap = plan.costs.overlap
    host = plan.host[rank] if plan.host is not None else None
    for i, cls in enumerate(plan.classes[rank]):
        if host is not None and host[i]:
            yield env.timeout(host[i])
        if cls == COMPUTE:
            starts[i] = env.now
            yield env.timeout(plan.durations[rank][i])
            ends[i] = env.now
        elif cls == SEND:
            transfer = network.transfer(
                plan.links[rank][i], plan.messages[rank][i], plan.durations[rank][i], (starts, ends, i)
            )
            if overlap:
                env.process(transfer)
            else:
                yield env.process(transfer)
        else:
            starts[i] = env.now
            yield network.arrived[plan.messages[rank][i]]
            ends[i] = env.now

"""The SimPy engine: one process per rank walks its pre-resolved action list (simulator/plan.py).

    from simulator.engine import run_plan
    timeline = run_plan(make_plan(schedule, costs))     # starts[rank][i], ends[rank][i] in seconds

Note: why a rank runs ahead of `env.now`.

Every duration is known when an action starts, so a rank does not need SimPy to pass time action by
action: it keeps its own clock `t` (never behind `env.now`) and walks on through compute and sends, and
through every receive whose message has already been sent (its arrival time is then known). It hands
control back to SimPy only when it must wait: at a receive whose send has not run yet. The sender wakes
it with the arrival time, and the rank's clock jumps to it:

    rank 0   F0 SEND_F0 F1 SEND_F1 ... RECV_B0 (wait) ........... (woken, t = arrival) B0 ...
    rank 1        RECV_F0 F0 ... (arrival known: no wait)    SEND_B0 --^

One SimPy event per wait, none per action; a finished rank waits out its own clock, so `env.now` ends
at the makespan.

This gives the same times as yielding a Timeout per action (simulator/reference.py does exactly that,
and tests/simulator/test_engine.py checks the traces agree byte for byte), because nothing a rank does
depends on the order in which SimPy interleaves the processes: a directed link has a single sender, which
claims it in program order, so first-come-first-served on the link is the sender's own order.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import simpy

from simulator.plan import COMPUTE, SEND, Plan, SimulationError


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """When every action ran: starts[rank][i] and ends[rank][i] in seconds (i = program order).

    A send's interval is its transfer on the link; a receive's runs from the moment the rank reached it
    to the arrival of its message (zero if it had already arrived).
    """

    starts: list[list[float]]
    """Seconds from the start of the run."""
    ends: list[list[float]]
    """Seconds; ends[rank][i] >= starts[rank][i]."""
    makespan: float
    """Seconds: the latest end."""


class _Fabric:
    """What the ranks share: message arrival times, the receivers waiting for them, link reservations."""

    def __init__(self, env: simpy.Environment, plan: Plan) -> None:
        ranks = plan.schedule.ranks
        self.env = env
        self.arrival = [-1.0] * plan.num_messages  # seconds; -1 until the message is sent
        self.waiting: list[simpy.Event | None] = [None] * plan.num_messages
        self.link_free = [0.0] * (ranks * ranks)  # when each directed link finishes its last transfer
        self.position = [0] * ranks  # where each rank is (for the deadlock message)


def run_plan(plan: Plan) -> Timeline:
    """Simulate the plan; raise SimulationError naming the stuck ranks if the schedule deadlocks."""
    env = simpy.Environment()
    fabric = _Fabric(env, plan)
    starts = [[0.0] * len(classes) for classes in plan.classes]
    ends = [[0.0] * len(classes) for classes in plan.classes]
    processes = [
        env.process(_rank(env, plan, rank, fabric, starts[rank], ends[rank]))
        for rank in range(plan.schedule.ranks)
    ]
    env.run()
    stuck = [rank for rank, process in enumerate(processes) if process.is_alive]
    if stuck:
        raise SimulationError(_deadlock_message(plan, fabric, stuck))
    return Timeline(starts=starts, ends=ends, makespan=max((max(e) for e in ends if e), default=0.0))


def _rank(
    env: simpy.Environment, plan: Plan, rank: int, fabric: _Fabric, starts: list[float], ends: list[float]
) -> Generator[simpy.Event, float, None]:
    """One rank: walk the actions in order on a local clock; yield to SimPy only to wait for a message."""
    classes, durations = plan.classes[rank], plan.durations[rank]
    messages, links = plan.messages[rank], plan.links[rank]
    host = plan.host[rank] if plan.host is not None else None
    arrival, waiting, link_free = fabric.arrival, fabric.waiting, fabric.link_free
    blocking = not plan.costs.overlap
    t = 0.0
    for i, cls in enumerate(classes):
        if host is not None:  # the rank's host works before the action starts (StageCost.host_*)
            t += host[i]
        if cls == COMPUTE:
            starts[i] = t
            t += durations[i]
            ends[i] = t
        elif cls == SEND:
            link = links[i]
            begin = t if link_free[link] <= t else link_free[link]  # one transfer at a time, FIFO
            done = begin + durations[i]
            link_free[link] = done
            starts[i], ends[i] = begin, done
            message = messages[i]
            arrival[message] = done
            if waiting[message] is not None:
                waiting[message].succeed(done)
            if blocking:
                t = done
        else:  # RECV
            message = messages[i]
            done = arrival[message]
            if done < 0:  # not sent yet: wait for the sender, who hands over the arrival time
                fabric.position[rank] = i
                waiting[message] = env.event()
                done = yield waiting[message]
            starts[i] = t
            if done > t:
                t = done
            ends[i] = t
    fabric.position[rank] = len(classes)
    if t > env.now:
        yield env.timeout(t - env.now)


def _deadlock_message(plan: Plan, fabric: _Fabric, stuck: list[int]) -> str:
    where = ", ".join(
        f"rank {rank} at {plan.schedule.actions[rank][fabric.position[rank]]}" for rank in stuck[:4]
    )
    more = f" and {len(stuck) - 4} more" if len(stuck) > 4 else ""
    return f"deadlock: {where}{more} wait for messages that are never sent"

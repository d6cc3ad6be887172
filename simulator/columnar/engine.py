"""The engine on columns: every rank takes its next action in the same round, as whole-array steps.

    starts, ends = run_columns(plan_columns(columns, costs))     # float64 per action, flat like the columns

Note: why this gives simulator/engine.py's times to the bit. Each action's start and end follow from
its rank's clock, the arrival of the message it waits for and the state of the link it sends on,
through the same additions and comparisons as in the SimPy engine:

    host     t = t + host
    compute  start = t, end = t + duration, t = end
    send     start = link_free if link_free > t else t, end = start + duration, link_free = arrival = end
             (blocking sends: t = end)
    receive  start = t, end = arrival if arrival > t else t, t = end      (only once the message is sent)

The order in which ranks take their turns changes none of these values: a link has one sender, and a
receive waits until its message has an arrival time. In a round, every rank whose next action can run
(anything but a receive of an unsent message) runs it; a round where none can is a deadlock. Rounds
number about the actions of the busiest rank, each a few dozen array operations over the ranks.

tests/simulator/test_columnar.py checks the times equal the SimPy engine's on every schedule.
"""

from __future__ import annotations

import numpy as np

from simulator.columnar.plan import READY, TRASH, ColumnPlan
from simulator.plan import SEND, SimulationError


def run_columns(plan: ColumnPlan) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of every action in seconds; SimulationError naming the stuck ranks on a deadlock."""
    columns = plan.columns
    ranks, size = columns.ranks, len(columns)
    starts, ends = np.zeros(size), np.zeros(size)
    arrival = np.full(plan.num_messages + 2, -1.0)  # -1 until sent
    arrival[READY] = 0.0
    link_free = np.zeros(ranks * ranks + 2)  # READY stays 0.0; TRASH is reset after every round
    # 0.0 for an overlapped send (the rank's clock stays), 1.0 otherwise: clock = max(now, end x this)
    moves = np.where(plan.classes == SEND, 0.0, 1.0) if plan.costs.overlap else np.ones(size)
    waits, posts, links, durations, host = plan.waits, plan.posts, plan.links, plan.durations, plan.host
    position, stop = columns.offsets[:-1].copy(), columns.offsets[1:]
    clock = np.zeros(ranks)
    active = np.flatnonzero(position < stop)  # ranks with actions left
    while active.size:
        index = position[active]
        waited = arrival[waits[index]]
        ready = waited >= 0
        lanes = active
        if not ready.all():
            if not ready.any():
                raise SimulationError(_deadlock_message(plan, active, index))
            lanes, index, waited = active[ready], index[ready], waited[ready]
        now = clock[lanes] if host is None else clock[lanes] + host[index]
        link = links[index]
        start = np.maximum(now, link_free[link])  # a send waits for its link; others read 0.0
        end = np.maximum(start + durations[index], waited)  # a receive waits for its message
        starts[index] = start
        ends[index] = end
        link_free[link] = end
        link_free[TRASH] = 0.0
        arrival[posts[index]] = end
        clock[lanes] = np.maximum(now, end * moves[index])  # end >= now; an overlapped send keeps now
        position[lanes] = index + 1
        if (index + 1 == stop[lanes]).any():
            active = active[position[active] < stop[active]]
    return starts, ends


def _deadlock_message(plan: ColumnPlan, lanes: np.ndarray, index: np.ndarray) -> str:
    """simulator/engine.py's message: the first four stuck ranks and where they wait."""
    columns = plan.columns
    stuck = [(int(rank), int(i)) for rank, i in zip(lanes, index, strict=True)]
    where = ", ".join(f"rank {rank} at {columns.action(i)}" for rank, i in stuck[:4])
    more = f" and {len(stuck) - 4} more" if len(stuck) > 4 else ""
    return f"deadlock: {where}{more} wait for messages that are never sent"

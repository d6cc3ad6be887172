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

from simulator.columnar.plan import ColumnPlan
from simulator.plan import RECV, SEND, SimulationError


def run_columns(plan: ColumnPlan) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of every action in seconds; SimulationError naming the stuck ranks on a deadlock."""
    columns = plan.columns
    ranks = columns.ranks
    starts = np.zeros(len(columns))
    ends = np.zeros(len(columns))
    arrival = np.full(plan.num_messages + 1, -1.0)  # -1 until sent; the spare slot for non-messages
    link_free = np.zeros(ranks * ranks + 1)
    position, stop = columns.offsets[:-1].copy(), columns.offsets[1:]
    clock = np.zeros(ranks)
    active = np.flatnonzero(position < stop)  # ranks with actions left
    overlap = plan.costs.overlap
    classes, durations, messages, links, host = (
        plan.classes,
        plan.durations,
        plan.messages,
        plan.links,
        plan.host,
    )
    while active.size:
        index = position[active]
        waited = arrival[messages[index]]
        receive = classes[index] == RECV
        ready = ~receive | (waited >= 0)
        lanes = active
        if not ready.all():
            if not ready.any():
                raise SimulationError(_deadlock_message(plan, active, index))
            lanes, index, waited, receive = (a[ready] for a in (active, index, waited, receive))
        now = clock[lanes]
        if host is not None:
            now = now + host[index]
        send = classes[index] == SEND
        link = links[index]
        free = link_free[link]
        start = np.where(send & (free > now), free, now)
        end = np.where(receive, np.where(waited > now, waited, now), start + durations[index])
        starts[index] = start
        ends[index] = end
        if send.any():
            link_free[link[send]] = end[send]
            arrival[messages[index[send]]] = end[send]
        clock[lanes] = np.where(send, now, end) if overlap else end
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

"""The cheap, dependency-only timing oracle: when does every action start and end?

from schedules import build
from schedules.dryrun import dry_run
timeline = dry_run(build("1f1b", ranks=4, microbatches=8))
timeline.makespan  # 33.0

An action starts when the previous action on its rank has ended and every action it depends on has
ended; it then runs for its cost (schedules/costs.py). No contention, no queues: the SimPy simulator
adds those with the same readiness rules. Runs in O(actions) with a worklist, so a million actions
take seconds.

Note: the data dependencies (what `Dependencies` resolves), for stage s, microbatch j, step k:

    F(s,j,k)        <- F(prev(s),j,k)
    B|I(s,j,k)      <- F(s,j,k) and B|I(next(s),j,k)   (the last stage: F only)
    W(s,j,k)        <- I(s,j,k)
    RECV_F(s,j,k)   <- SEND_F(prev(s),j,k)     RECV_B(s,j,k) <- SEND_B(next(s),j,k)
    RECV_G|W(s)>p   <- SEND_G|W(p)>s, same microbatch and step
    OVERLAP_F_B     <- what its forward and its backward wait for (the pair starts when both can)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from schedules.costs import Costs, action_costs
from schedules.ir import MATCHING, RECV_KINDS, Action, Kind, Schedule, ScheduleError
from schedules.semantics import counterpart, overlap_waits

Key = tuple  # Action.key: (stage, kind, microbatch, step, peer)
Position = tuple[int, int]  # (rank, index in the rank's action list)


class Dependencies:
    """What each action waits for besides its rank's previous action, as positions (rank, index).

    Built once per schedule (an index of every action's key, each stage's neighbours), then asked per
    action: O(1) each, which keeps the dry run linear.
    """

    def __init__(self, schedule: Schedule) -> None:
        layout = schedule.layout
        stages = range(layout.num_stages)
        for rank, actions in enumerate(schedule.actions):
            for action in actions:
                if action.stage not in stages:
                    raise ScheduleError(
                        f"{action} on rank {rank} names stage {action.stage}, which is not there"
                    )
        self.layout = layout
        self.prev = [-1 if (prev := layout.prev_stage(s)) is None else prev for s in stages]
        self.next = [-1 if (nxt := layout.next_stage(s)) is None else nxt for s in stages]
        self.index = index_actions(schedule)
        self.pairs = overlap_waits(schedule)

    def keys(self, action: Action) -> list[tuple[Key, ...]]:
        """Each dependency as a tuple of alternative keys: the next stage's backward may be B or I."""
        stage, kind, j, step = action.stage, action.kind, action.microbatch, action.step
        if kind is Kind.OVERLAP_F_B:
            halves = self.pairs.get(action.key, ())
            return [key for half in halves for key in self.keys(half)]
        if kind is Kind.F:
            prev = self.prev[stage]
            return [] if prev < 0 else [((prev, Kind.F, j, step, None),)]
        if kind is Kind.B or kind is Kind.I:
            nxt = self.next[stage]
            own = ((stage, Kind.F, j, step, None),)
            return [own] if nxt < 0 else [own, ((nxt, Kind.B, j, step, None), (nxt, Kind.I, j, step, None))]
        if kind is Kind.W:
            return [((stage, Kind.I, j, step, None),)]
        if kind in RECV_KINDS:  # its send (schedules.semantics); a receive from nowhere waits forever
            send = counterpart(self.layout, action)
            return [(send if send is not None else (-1, MATCHING[kind], j, step, None),)]
        return []

    def of(self, action: Action) -> list[Position]:
        """The positions this action waits for; raise ScheduleError if no rank runs one of them."""
        index, resolved = self.index, []
        for alternatives in self.keys(action):
            found = index.get(alternatives[0])
            if found is None and len(alternatives) > 1:
                found = index.get(alternatives[1])
            if found is None:
                wanted = " or ".join(key_text(key) for key in alternatives)
                raise ScheduleError(f"{action} waits for {wanted}, which no rank runs")
            resolved.append(found)
        return resolved


def index_actions(schedule: Schedule) -> dict[Key, Position]:
    """Action.key -> where it runs (the first occurrence if a key repeats)."""
    index: dict[Key, Position] = {}
    for rank, actions in enumerate(schedule.actions):
        for position, action in enumerate(actions):
            index.setdefault(action.key, (rank, position))
    return index


def key_text(key: Key) -> str:
    stage, kind, microbatch, step, peer = key
    return str(Action(stage, kind, microbatch, step, None, peer))


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """When every action of a schedule runs, by rank and index in the rank's action list."""

    schedule: Schedule
    """The schedule that was timed."""
    start: tuple[tuple[float, ...], ...]
    """start[rank][index]: when the action starts (time units)."""
    end: tuple[tuple[float, ...], ...]
    """end[rank][index]: when it ends (time units)."""

    @property
    def makespan(self) -> float:
        return max((ends[-1] for ends in self.end if ends), default=0)

    def spans(self, rank: int) -> list[tuple[float, float]]:
        """(start, end) of each of the rank's actions, by index."""
        return list(zip(self.start[rank], self.end[rank], strict=True))


def dry_run(schedule: Schedule, costs: Costs | None = None) -> Timeline:
    """Time every action; raise ScheduleError naming the stuck actions if the schedule deadlocks.

    A worklist of ranks: a rank runs forward until an action waits for one not yet timed, parks
    itself on that action, and is put back on the worklist when it gets timed. Each action is looked
    at once plus once per time it blocks, so the whole run is linear in the actions.
    """
    durations = action_costs(costs or Costs(), schedule)
    depends = Dependencies(schedule).of
    actions = schedule.actions
    starts: list[list[float]] = [[] for _ in actions]
    ends: list[list[float]] = [[] for _ in actions]
    waiting: dict[Position, list[int]] = {}  # an action not yet timed -> ranks parked on it
    worklist = deque(range(len(actions)))
    while worklist:
        rank = worklist.popleft()
        rank_actions, rank_starts, rank_ends = actions[rank], starts[rank], ends[rank]
        rank_durations = durations[rank]
        position, last = len(rank_ends), len(rank_actions)
        free_at = rank_ends[-1] if rank_ends else 0
        while position < last:
            action = rank_actions[position]
            ready = free_at
            for dep in depends(action):
                dep_ends = ends[dep[0]]
                if dep[1] >= len(dep_ends):
                    waiting.setdefault(dep, []).append(rank)
                    break
                if dep_ends[dep[1]] > ready:
                    ready = dep_ends[dep[1]]
            else:
                rank_starts.append(ready)
                free_at = ready + rank_durations[position]
                rank_ends.append(free_at)
                if waiting and (rank, position) in waiting:
                    worklist.extend(waiting.pop((rank, position)))
                position += 1
                continue
            break
    if any(len(e) < len(a) for e, a in zip(ends, actions, strict=True)):
        raise ScheduleError(deadlock_message(schedule, [len(e) for e in ends]))
    return Timeline(schedule=schedule, start=tuple(map(tuple, starts)), end=tuple(map(tuple, ends)))


def deadlock_message(schedule: Schedule, done: list[int], limit: int = 4) -> str:
    """One line: each stuck rank's next action and what it waits for (the first `limit` ranks)."""
    dependencies = Dependencies(schedule)
    stuck = []
    for rank, actions in enumerate(schedule.actions):
        if done[rank] >= len(actions):
            continue
        action = actions[done[rank]]
        blockers = [
            str(schedule.actions[dep[0]][dep[1]]) for dep in dependencies.of(action) if dep[1] >= done[dep[0]]
        ]
        stuck.append(f"rank {rank} at {action} waits for {', '.join(blockers) or 'its previous action'}")
    more = f" (and {len(stuck) - limit} more ranks)" if len(stuck) > limit else ""
    return "deadlock: " + "; ".join(stuck[:limit]) + more

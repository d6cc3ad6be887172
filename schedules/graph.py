"""The schedule graph and `validate()`: is this schedule runnable and does it mean what it claims?

from schedules import build
from schedules.graph import build_graph, validate
validate(build("2bw", ranks=4, microbatches=8, steps=3))   # raises ScheduleError with a picture if not

Nodes are (rank, index) with the Action in attribute `action`; edges are each rank's order plus the data
dependencies listed in schedules/dryrun.py. A failure raises ScheduleError whose message is one headline
naming the problem and the action, then the rank x position grid with the bad cell marked:

    0B3 on rank 0 comes before its forward 0F3
            2        3          4
    rank 0    0F2    >>0B3<<    0F3
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from schedules.dryrun import Dependencies, Position, dry_run, index_actions
from schedules.grid import render_order
from schedules.ir import (
    BACKWARD_KINDS,
    COMPUTE_KINDS,
    MATCHING,
    RECV_KINDS,
    SEND_KINDS,
    Action,
    Kind,
    Schedule,
    ScheduleError,
    Versioning,
)
from schedules.semantics import WRITES_VERSION, counterpart, overlap_pairs, overlap_problem

if TYPE_CHECKING:
    import networkx as nx


def build_graph(schedule: Schedule) -> nx.DiGraph:
    """The DiGraph of actions: rank-order edges and data-dependency edges (producer -> consumer)."""
    import networkx as nx  # only here and for a deadlock's cycle: a tenth of a second to load

    graph = nx.DiGraph()
    dependencies = Dependencies(schedule)
    for rank, actions in enumerate(schedule.actions):
        for position, action in enumerate(actions):
            graph.add_node((rank, position), action=action)
            if position:
                graph.add_edge((rank, position - 1), (rank, position), kind="order")
    for rank, actions in enumerate(schedule.actions):
        for position, action in enumerate(actions):
            try:
                producers = dependencies.of(action)
            except ScheduleError:
                continue  # a missing producer: validate() names it
            for producer in producers:
                graph.add_edge(producer, (rank, position), kind="data")
    return graph


def _fail(schedule: Schedule, headline: str, mark: Position | None = None) -> ScheduleError:
    return ScheduleError(f"{headline}\n{render_order(schedule, mark)}")


def validate(schedule: Schedule) -> None:
    """Raise ScheduleError (headline + marked grid) at the first problem; return None if the schedule is fine.

    Checked in this order: placement, overlapped pairs, duplicates, missing actions, unmatched sends and
    receives, backward before forward, weight versions, deadlock.
    """
    checks = (
        _check_placement,
        _check_overlaps,
        _check_duplicates,
        _check_expected,
        _check_complete,
        _check_comms,
        _check_order,
        _check_versions,
    )
    for check in checks:
        problem = next(check(schedule), None)
        if problem is not None:
            headline, mark = problem
            raise _fail(schedule, headline, mark)
    _check_deadlock(schedule)


Problems = Iterator[tuple[str, Position | None]]


def _check_placement(schedule: Schedule) -> Problems:
    placement = schedule.layout.placement
    for rank, actions in enumerate(schedule.actions):
        for position, action in enumerate(actions):
            if not 0 <= action.stage < len(placement):
                yield (
                    f"{action} on rank {rank} names stage {action.stage}, which is not there",
                    (rank, position),
                )
            elif placement[action.stage] != rank:
                owner = placement[action.stage]
                yield (
                    f"{action} runs on rank {rank}, but stage {action.stage} lives on rank {owner}",
                    (rank, position),
                )


def _check_overlaps(schedule: Schedule) -> Problems:
    """Every OVERLAP_F_B is followed by the forward it names and a backward (schedules.semantics)."""
    for rank, actions in enumerate(schedule.actions):
        for marker, _, _ in overlap_pairs(actions):
            problem = overlap_problem(actions, marker)
            if problem is not None:
                yield f"{problem} on rank {rank}", (rank, marker)


def _check_duplicates(schedule: Schedule) -> Problems:
    seen: dict[tuple, Position] = {}
    for rank, actions in enumerate(schedule.actions):
        for position, action in enumerate(actions):
            if action.key in seen:
                first_rank, first_position = seen[action.key]
                where = f"first at rank {first_rank}, position {first_position}"
                yield f"{action} on rank {rank} is a duplicate ({where})", (rank, position)
            seen.setdefault(action.key, (rank, position))


def _check_expected(schedule: Schedule) -> Problems:
    """No compute action outside the schedule's microbatches, steps and pipelines."""
    for rank, actions in enumerate(schedule.actions):
        for position, action in enumerate(actions):
            if action.kind in COMPUTE_KINDS and not _expected(schedule, action):
                yield f"{action} on rank {rank} is not part of this schedule's work", (rank, position)


def _check_complete(schedule: Schedule) -> Problems:
    """Every stage runs F and (B, or I and W) for every microbatch of its pipeline in every step."""
    layout, index = schedule.layout, index_actions(schedule)
    for step in range(schedule.steps):
        for microbatch in range(schedule.microbatches):
            first = (microbatch % layout.pipelines) * layout.stages_per_pipeline
            for stage in range(first, first + layout.stages_per_pipeline):
                found = {
                    kind: index[key]
                    for kind in (Kind.F, Kind.B, Kind.I, Kind.W)
                    if (key := (stage, kind, microbatch, step, None)) in index
                }
                mark = next(iter(found.values()), None)  # the forward if there is one
                name = Action(stage, Kind.F, microbatch, step)
                if Kind.F not in found:
                    yield f"missing forward {name}", mark
                elif Kind.B in found and (Kind.I in found or Kind.W in found):
                    yield f"{name}: stage {stage} runs both a full backward and a split one", mark
                elif Kind.B not in found and not (Kind.I in found and Kind.W in found):
                    lacking = "W" if Kind.I in found else "I" if Kind.W in found else "B (or I and W)"
                    yield f"missing backward {lacking} for {name} on stage {stage}", mark


def _expected(schedule: Schedule, action: Action) -> bool:
    layout = schedule.layout
    return (
        action.microbatch is not None
        and 0 <= action.microbatch < schedule.microbatches
        and 0 <= action.step < schedule.steps
        and action.microbatch % layout.pipelines == layout.pipeline(action.stage)
    )


def _check_comms(schedule: Schedule) -> Problems:
    """Every receive has its matching send and every send its receive."""
    dependencies = Dependencies(schedule)
    index = dependencies.index
    for rank, actions in enumerate(schedule.actions):
        for position, action in enumerate(actions):
            if action.kind in RECV_KINDS:
                try:
                    dependencies.of(action)
                except ScheduleError:
                    yield f"{action} on rank {rank} has no matching {MATCHING[action.kind]}", (rank, position)
            elif action.kind in SEND_KINDS:
                receiver = counterpart(schedule.layout, action)
                if receiver is None or receiver not in index:
                    yield f"{action} on rank {rank} has no matching {MATCHING[action.kind]}", (rank, position)


def _check_order(schedule: Schedule) -> Problems:
    """On its own rank, a backward comes after its forward and a W after its I."""
    for rank, actions in enumerate(schedule.actions):
        done: set[tuple] = set()
        for position, action in enumerate(actions):
            stage, j, step = action.stage, action.microbatch, action.step
            if action.kind in BACKWARD_KINDS and (stage, Kind.F, j, step) not in done:
                name = Action(stage, Kind.F, j, step)
                yield f"{action} on rank {rank} comes before its forward {name}", (rank, position)
            if action.kind is Kind.W and (stage, Kind.I, j, step) not in done:
                name = Action(stage, Kind.I, j, step)
                yield f"{action} on rank {rank} comes before its input backward {name}", (rank, position)
            done.add((stage, action.kind, j, step))


def _check_versions(schedule: Schedule) -> Problems:
    """Every version read or written follows the schedule's Versioning rule (docs/schedules.md)."""
    for rank, actions in enumerate(schedule.actions):
        current: dict[int, int] = {}  # stage -> newest version the rank holds
        stashed: dict[tuple, int | None] = {}  # (stage, microbatch, step) -> version its F read
        for position, action in enumerate(actions):
            expected = _expected_version(schedule.versioning, action, current, stashed)
            if action.kind in WRITES_VERSION and action.version is not None:
                current[action.stage] = action.version
            if expected is not None and action.version is not None and action.version != expected:
                rule = schedule.versioning.value
                yield (
                    f"{action} on rank {rank} has version {action.version}, "
                    f"but the {rule} rule gives {expected}",
                    (rank, position),
                )


def _expected_version(
    versioning: Versioning, action: Action, current: dict[int, int], stashed: dict[tuple, int | None]
) -> int | None:
    """The version the rule demands for this action, or None where the rule says nothing."""
    now = current.get(action.stage, 0)
    if action.kind is Kind.OPT:
        return now + 1
    if action.kind not in COMPUTE_KINDS:
        return None
    if versioning is Versioning.FLUSH:
        return action.step
    if versioning is Versioning.DOUBLE_BUFFER:
        return max(0, action.step - 1)
    if versioning is Versioning.STASH:
        key = (action.stage, action.microbatch, action.step)
        if action.kind is Kind.F:
            stashed[key] = action.version
            return now
        return stashed.get(key)
    return now  # CURRENT: whatever the stage holds when the action runs


def _check_deadlock(schedule: Schedule) -> None:
    """Run the dry run; if it gets stuck, name a cycle of waiting actions and mark one of them."""
    try:
        dry_run(schedule)
    except ScheduleError as error:
        if not str(error).startswith("deadlock"):
            raise _fail(schedule, str(error)) from None
        cycle = _find_cycle(schedule)
        mark = cycle[0] if cycle else None
        names = " -> ".join(str(schedule.actions[r][i]) for r, i in cycle[:8])
        more = " -> ..." if len(cycle) > 8 else ""
        raise _fail(schedule, f"deadlock: a cycle of waits {names}{more}", mark) from None


def _find_cycle(schedule: Schedule) -> list[Position]:
    import networkx as nx

    try:
        edges = nx.find_cycle(build_graph(schedule))
    except nx.NetworkXNoCycle:
        return []
    return [edge[0] for edge in edges]

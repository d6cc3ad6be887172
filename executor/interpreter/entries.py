"""What the interpreter decides about each op of a rank's program before the first one runs.

    entries = compile_entries(plan, handlers, stages, trace=True)
    entries[i].handler(entries[i].op)        # what executor.interpreter.runtime.Runtime does, op by op

Per op: its handler, whether it is recorded or timed, the batch of sends and receives it starts, the
versions it releases, what it does to the gradient buffers, and the training batches to make while a
receive waits. The loop itself then only looks things up: where each action is cheap (a small model, a
fast device), the interpreter's own cost is the step time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from executor.interpreter.program import EVAL_RECV, EVAL_SEND, Extra, Op, RankPlan
from executor.interpreter.stage import StageState
from schedules.ir import COMM_KINDS, Kind

RECV_OPS = frozenset({Kind.RECV_F, Kind.RECV_B, Kind.RECV_G, Kind.RECV_W, EVAL_RECV})
ALL_COMM = frozenset(COMM_KINDS | {EVAL_RECV, EVAL_SEND})
TIMED_KINDS = frozenset({Kind.F, Kind.B, Kind.I, Kind.W, Kind.OPT})
ADDING_KINDS = frozenset({Kind.B, Kind.I, Kind.W, Kind.RECV_G})
"""Ops that add into the gradient buffers (param.grad), making the ones still missing."""
RESETTING_KINDS = frozenset({Kind.OPT, Kind.SEND_G})
"""Ops that empty the gradient buffers."""


class Entry(NamedTuple):
    """One op of the program with what the interpreter decides about it before the run starts."""

    op: Op
    handler: Callable[[Op], int | None]
    traced: bool
    """Recorded: an action of the schedule (not one of the executor's own ops), in a traced run."""
    timed: bool
    """A compute op: timed by the device timer where there is one."""
    comm_end: int
    """For a communication op, the end of its run of consecutive communication ops (one batch); else 0."""
    releases: tuple[tuple[int, int], ...]
    """(stage, version) pairs no longer read once the op has run."""
    grads: int
    """0: the op leaves the gradient buffers alone; 1: it adds into them; 2: it empties them (the memory
    count looks at the buffers again after a 2, and after a 1 while some were missing)."""
    prefetch: tuple[tuple[int, int], ...] | None = None
    """For a receive: the training batches (step, microbatch) that the rank's forwards on data need
    from the next one to the end of its step, made together while the receive waits rather than one
    by one on the forwards' critical path (made in one go, each also costs a quarter as much)."""


def compile_entries(
    plan: RankPlan,
    handlers: Mapping[str, Callable[[Op], int | None]],
    stages: Mapping[int, StageState],
    *,
    trace: bool,
) -> list[Entry]:
    """The plan's ops with their handlers and flags; `trace` False records no action's event."""
    entries = [_entry(plan, index, op, handlers, trace) for index, op in enumerate(plan.ops)]
    upcoming: tuple[tuple[int, int], ...] | None = None
    for index in range(len(entries) - 1, -1, -1):  # backwards: each receive sees the forwards after it
        op = entries[index].op
        if op.kind in RECV_OPS:
            entries[index] = entries[index]._replace(prefetch=upcoming)
        elif op.kind is Kind.F and (stages[op.stage].first or stages[op.stage].last):
            same_step = upcoming is not None and upcoming[0][0] == op.step
            upcoming = ((op.step, op.microbatch),) + (upcoming if same_step else ())
    return entries


def _entry(plan: RankPlan, index: int, op: Op, handlers: Mapping, trace: bool) -> Entry:
    ops, end = plan.ops, 0
    if op.kind in ALL_COMM:
        end = index + 1
        while end < len(ops) and ops[end].kind in ALL_COMM:
            end += 1
    return Entry(
        op=op,
        handler=handlers[op.kind],
        traced=trace and not isinstance(op, Extra),
        timed=op.kind in TIMED_KINDS,
        comm_end=end,
        releases=plan.releases.get(index, ()),
        grads=2 if op.kind in RESETTING_KINDS else int(op.kind in ADDING_KINDS),
    )

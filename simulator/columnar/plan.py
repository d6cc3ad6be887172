"""simulator/plan.py on columns: every action's class, duration, bytes, message and link as arrays.

    plan = plan_columns(columns, costs)      # ColumnPlan; the same numbers as make_plan's lists

Costs per (stage, kind) come from the IR plan's own tables, so both paths price an action alike; jitter
draws come from the same random streams in the same order (rank by rank, program order). Messages are
numbered by formula instead of by first sight, which changes nothing but their labels:

    neighbour message of stage s, step k, microbatch j:  ((k * S + s) * m + j) * 2 + (0 forward, 1 backward)
    AMDP gradient and weight messages:                   after those, in order of first sight
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from schedules.ir import Action, Kind
from simulator.columnar.columns import (
    CODE,
    KINDS,
    RECV_B,
    RECV_F,
    RECV_G,
    RECV_W,
    SEND_B,
    SEND_F,
    SEND_G,
    SEND_W,
    Columns,
    is_kind,
)
from simulator.costs import CostModel
from simulator.plan import (
    COMPUTE,
    HOST_OF_KIND,
    SEND,
    WARMUP_OF_KIND,
    SimulationError,
    _jitter,
    _link_jitter,
    _templates,
    virtual_stage_cost,
)

INVALID = -1
"""Class of a (stage, kind) the layout cannot run (a send with no neighbour)."""


READY, TRASH = -2, -1
"""Spare slots at the end of the engine's arrival and link arrays: READY always reads 0.0 (what an
action that waits for nothing, or holds no link, sees); TRASH absorbs the writes of everything else."""


@dataclass(frozen=True, kw_only=True, eq=False)
class ColumnPlan:
    """Flat arrays, index i = action i of the columns, in the form the engine walks."""

    columns: Columns
    """The lowered schedule."""
    costs: CostModel
    """The cost model the arrays were resolved with."""
    classes: np.ndarray
    """int8 COMPUTE, SEND or RECV."""
    durations: np.ndarray
    """float64 seconds, as simulator/plan.py's."""
    waits: np.ndarray
    """int32 message a receive waits for; READY (-2) otherwise."""
    posts: np.ndarray
    """int32 message a send delivers; TRASH (-1) otherwise."""
    links: np.ndarray
    """int32 link a send holds (source rank * P + target rank); TRASH (-1) otherwise."""
    num_messages: int
    """Size of the message numbering (some numbers may go unused)."""
    host: np.ndarray | None
    """float64 host seconds before each action; None without host time."""
    sizes: np.ndarray
    """int64 bytes a send or receive moves, per (stage, kind code) cell: see nbytes."""

    def nbytes(self, where: np.ndarray) -> np.ndarray:
        """Bytes moved by the actions at `where` (0 for compute)."""
        columns = self.columns
        return self.sizes[columns.stage[where].astype(np.int64) * len(KINDS) + columns.kind[where]]


def plan_columns(columns: Columns, costs: CostModel) -> ColumnPlan:
    """make_plan for columns; SimulationError for an action the layout cannot run or a receive
    without its send."""
    schedule = columns.header()
    costs.check_stages(columns.layout.stages_per_pipeline // columns.chunks)
    table = _table(schedule, costs)
    cell = columns.stage * np.int32(len(KINDS)) + columns.kind
    classes = table["class"][cell]
    if np.any(classes == INVALID):
        index = int(np.argmax(classes == INVALID))
        rank = int(np.searchsorted(columns.offsets, index, side="right") - 1)
        raise SimulationError(f"rank {rank}: {columns.action(index)} has no neighbour stage to talk to")
    waits, posts, num_messages = _messages(columns)
    durations = _durations(columns, costs, classes, table["seconds"][cell])
    _share_overlap(columns, costs, durations)
    _add_warmup(columns, costs, durations)
    return ColumnPlan(
        columns=columns,
        costs=costs,
        classes=classes,
        durations=durations,
        waits=waits,
        posts=posts,
        links=_links(columns, table["link"]),
        num_messages=num_messages,
        host=table["host"][cell] if table["host"] is not None else None,
        sizes=table["bytes"],
    )


def _table(schedule, costs: CostModel) -> dict[str, np.ndarray | None]:
    """Per (stage, kind code), flattened: class, seconds, bytes and link from simulator/plan.py's
    templates (a peer's link depends on the action, filled in later), host seconds."""
    stages, kinds = schedule.num_stages, len(KINDS)
    out = {
        "class": np.full(stages * kinds, INVALID, dtype=np.int8),
        "seconds": np.zeros(stages * kinds),
        "bytes": np.zeros(stages * kinds, dtype=np.int64),
        "link": np.full(stages * kinds, -1, dtype=np.int64),
    }
    for stage, templates in enumerate(_templates(schedule, costs)):
        for kind, template in templates.items():
            peer = 0 if kind in (Kind.SEND_G, Kind.SEND_W) else None
            cls, seconds, size, link, _ = template(Action(stage, kind, 0, 0, None, peer))
            cell = stage * kinds + CODE[kind]
            out["class"][cell], out["seconds"][cell], out["bytes"][cell], out["link"][cell] = (
                cls,
                seconds,
                size,
                link,
            )
    out["host"] = None
    if any(entry.has_host_time for entry in costs.stages):
        host = np.zeros(stages * kinds)
        for stage in range(stages):
            entry = virtual_stage_cost(schedule, costs, stage)[0]
            for kind, name in HOST_OF_KIND.items():
                host[stage * kinds + CODE[kind]] = getattr(entry, name)
        out["host"] = host
    return out


NEIGHBOUR = (SEND_F, RECV_F, SEND_B, RECV_B)
SENDER_SHIFT = np.zeros(len(KINDS), dtype=np.int64)
SENDER_SHIFT[[RECV_F, RECV_B]] = -1, 1  # a receive's message comes from the previous / next stage
BACKWARD = np.zeros(len(KINDS), dtype=np.int64)
BACKWARD[[SEND_B, RECV_B]] = 1


def _messages(columns: Columns) -> tuple[np.ndarray, np.ndarray, int]:
    """Per action, the message a receive waits for (READY elsewhere) and the one a send delivers
    (TRASH elsewhere), and how many numbers there are; SimulationError for a receive with no send."""
    waits = np.full(len(columns), READY, dtype=np.int32)
    posts = np.full(len(columns), TRASH, dtype=np.int32)
    where = columns.where(*NEIGHBOUR)
    kind, microbatch, step = columns.kind[where], columns.microbatch[where], columns.step[where]
    m, steps = columns.microbatches, columns.steps
    if np.any((microbatch < 0) | (microbatch >= m) | (step < 0) | (step >= steps)):
        raise SimulationError("a send or receive names a microbatch or step outside the schedule")
    sender = columns.stage[where] + SENDER_SHIFT[kind]
    message = ((step * np.int64(columns.num_stages) + sender) * m + microbatch) * 2 + BACKWARD[kind]
    send = (kind == SEND_F) | (kind == SEND_B)
    posts[where[send]] = message[send]
    waits[where[~send]] = message[~send]
    count = 2 * steps * columns.num_stages * m
    count += _peer_messages(columns, waits, posts, count)
    sent = np.zeros(count, dtype=bool)
    sent[posts[posts >= 0]] = True
    receives = np.flatnonzero(waits >= 0)
    unmatched = _first_false(sent[waits[receives]])
    if unmatched is not None:
        index = int(receives[unmatched])
        rank = int(np.searchsorted(columns.offsets, index, side="right") - 1)
        raise SimulationError(f"rank {rank}: {columns.action(index)} has no matching send in the schedule")
    return waits, posts, count


def _peer_messages(columns: Columns, waits: np.ndarray, posts: np.ndarray, first: int) -> int:
    """Number AMDP's gradient and weight messages from `first` on, by their send key (as plan.py)."""
    kind = columns.kind
    ids: dict[tuple, int] = {}
    matching = {SEND_G: SEND_G, SEND_W: SEND_W, RECV_G: SEND_G, RECV_W: SEND_W}
    for index in columns.where(SEND_G, RECV_G, SEND_W, RECV_W).tolist():
        code, stage, peer = int(kind[index]), int(columns.stage[index]), int(columns.peer[index])
        send = code in (SEND_G, SEND_W)
        sender, receiver = (stage, peer) if send else (peer, stage)
        key = (sender, matching[code], int(columns.microbatch[index]), int(columns.step[index]), receiver)
        (posts if send else waits)[index] = first + ids.setdefault(key, len(ids))
    return len(ids)


def _first_false(flags: np.ndarray) -> int | None:
    return None if flags.all() else int(np.argmin(flags))


def _links(columns: Columns, table: np.ndarray) -> np.ndarray:
    """The link of every send (a peer's from its rank and the peer's); TRASH elsewhere."""
    ranks = columns.ranks
    links = np.full(len(columns), TRASH, dtype=np.int32)
    sends = columns.where(SEND_F, SEND_B)
    links[sends] = table[columns.stage[sends] * np.int32(len(KINDS)) + columns.kind[sends]]
    peer_sends = columns.where(SEND_G, SEND_W)
    if peer_sends.size:
        peer = columns.peer[peer_sends]
        nowhere = (peer < 0) | (peer >= columns.num_stages)
        if np.any(nowhere):
            raise SimulationError(
                f"{columns.action(int(peer_sends[np.argmax(nowhere)]))} names no peer stage"
            )
        placement = np.array(columns.layout.placement, dtype=np.int64)
        rank = np.searchsorted(columns.offsets, peer_sends, side="right") - 1
        links[peer_sends] = rank * ranks + placement[peer]
    return links


def _durations(columns: Columns, costs: CostModel, classes: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """plan._durations: compute x straggler factor x jitter, transfers x link jitter, drawn rank by rank
    in program order from the same streams."""
    draw = _jitter(costs, random.Random(costs.seed))
    wire = _link_jitter(costs)
    slow = [costs.straggler_factor(rank) for rank in range(columns.ranks)]
    if draw is None and wire is None and all(factor == 1.0 for factor in slow):
        return seconds  # a fresh array already (gathered from the table)
    durations = seconds.copy()
    for rank in range(columns.ranks):
        span = columns.span(rank)
        cls, base, out = classes[span], seconds[span], durations[span]
        compute, sends = cls == COMPUTE, cls == SEND
        factors = [draw() for _ in range(int(compute.sum()))] if draw else 1.0
        out[compute] = base[compute] * slow[rank] * np.asarray(factors, dtype=np.float64)
        if wire is not None:
            out[sends] = base[sends] * np.array([wire() for _ in range(int(sends.sum()))])
    return durations


def _share_overlap(columns: Columns, costs: CostModel, durations: np.ndarray) -> None:
    """schedules.costs.share_overlap on columns: the two actions after each OVERLAP_F_B marker take the
    pair's time, max + x min, each its share (the same float operations, in the same order)."""
    markers = np.flatnonzero(columns.kind == CODE[Kind.OVERLAP_F_B])
    if not len(markers):
        return
    forward, backward = durations[markers + 1], durations[markers + 2]
    shorter = np.minimum(forward, backward)
    total = np.where(
        shorter > 0, np.maximum(forward, backward) + costs.overlap_f_b * shorter, forward + backward
    )
    both = forward + backward
    safe = np.where(both > 0, both, 1.0)
    durations[markers + 1] = np.where(both > 0, total * forward / safe, forward)
    durations[markers + 2] = np.where(both > 0, total * backward / safe, backward)


def _add_warmup(columns: Columns, costs: CostModel, durations: np.ndarray) -> None:
    """plan._add_warmup: each stage's warm-up on its first F, first backward (B or I) and first OPT on
    each rank."""
    if not any(entry.has_warmup for entry in costs.stages):
        return
    schedule = columns.header()
    rank = columns.rank_of().astype(np.int64)
    key = rank * columns.num_stages + columns.stage
    for name in dict.fromkeys(WARMUP_OF_KIND.values()):
        kinds = [CODE[kind] for kind, field in WARMUP_OF_KIND.items() if field == name]
        where = np.flatnonzero(is_kind(columns.kind, *kinds))
        first = np.full(columns.ranks * columns.num_stages, len(columns), dtype=np.int64)
        np.minimum.at(first, key[where], where)
        for index in first[first < len(columns)].tolist():
            entry, chunks = virtual_stage_cost(schedule, costs, int(columns.stage[index]))
            durations[index] += getattr(entry, name) / chunks

"""What each rank of a real run executes, and everything that follows from the action lists alone.

    from executor.interpreter.program import build_plans
    plans = build_plans(schedule, val_steps={9, 19}, val_microbatches=2, checkpoint_steps={9}, grad_clip=1.0)
    plans[rank].ops          # the schedule's actions plus the executor's own ops, in order

A rank's program is its lowered action list with, right after its last update (OPT or RECV_W) of a step,
the executor's own ops for that step boundary ("the cut"): validation forwards when validation is due,
then a CUT op (checkpoint and step bookkeeping).

With gradient clipping on a synchronous (FLUSH) schedule, each step also gets a NORM op (the global
gradient norm over all stages, a sum across ranks; see executor.interpreter.gradnorm), right before the
first OPT that follows the rank's last backward of the step. An OPT the schedule placed earlier (interleaved:
another chunk's backward is still to come) waits until after the NORM, keeping its order:

    interleaved, rank 0:  .. 2B7 2SEND_B7 2OPT 0RECV_B7 0B7 0OPT ..
    its program:          .. 2B7 2SEND_B7 0RECV_B7 0B7 NORM 2OPT 0OPT | CUT ..

Every send of the step comes before the NORM, so no rank blocks in the sum while a peer waits on it.

Note: the cut of step k on one rank, 2BW, stage 0 of P = 2 (no flush: step k+1 has started):

    .. F(k+1,0) B(k,m-1) OPT(k) | EVAL_F EVAL_SEND CUT(k) | F(k+1,1) B(k+1,0) ..

Everything here is static and identical on every rank: which forwards must keep their weights frozen
until their backward (an update falls in between), which updates must keep the old version, when a
version is no longer read, and the order of the messages on every (sender, receiver) pair.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

from schedules import semantics
from schedules.ir import (
    COMPUTE_KINDS,
    SEND_KINDS,
    WEIGHT_GRAD_KINDS,
    Action,
    Kind,
    Layout,
    Schedule,
    Versioning,
)
from schedules.semantics import Message, contributions

EVAL_RECV, EVAL_F, EVAL_SEND, CUT, NORM = "EVAL_RECV", "EVAL_F", "EVAL_SEND", "CUT", "NORM"
UPDATE_KINDS = frozenset({Kind.OPT, Kind.RECV_W})
GRAPH_KINDS = frozenset({Kind.B, Kind.I, Kind.W})  # the backward ops that read a forward's graph


class Extra(NamedTuple):
    """An op of the executor's own (validation, global gradient norm, step boundary); never traced."""

    kind: str
    stage: int
    step: int
    microbatch: int | None = None


Op = Action | Extra


class MicrobatchKey(NamedTuple):
    """Where the interpreter files one microbatch's tensors and graph: the same for every op (and every
    kind of op) of that microbatch on that stage, in that step."""

    stage: int
    step: int
    microbatch: int | None

    @classmethod
    def of(cls, op: Op) -> MicrobatchKey:
        return cls(op.stage, op.step, op.microbatch)


EVAL_AS = {EVAL_SEND: Kind.SEND_F, EVAL_RECV: Kind.RECV_F}
"""A validation activation travels as a training activation does (same ends), under the letter E."""
SEND_OPS = SEND_KINDS | {EVAL_SEND}


def message_of(op: Op, layout: Layout) -> Message | None:
    """The message an op sends or receives (schedules.semantics.message; E for a validation
    activation); None for ops that move nothing."""
    if isinstance(op, Extra):
        kind = EVAL_AS.get(op.kind)
        if kind is None:
            return None
        found = semantics.message(layout, Action(op.stage, kind, op.microbatch, op.step))
        return None if found is None else found._replace(kind="E")
    return semantics.message(layout, op)


def is_send(op: Op) -> bool:
    return op.kind in SEND_OPS


@dataclass(frozen=True, kw_only=True)
class RankPlan:
    """The static facts one rank's runtime needs (indices are positions in `ops`)."""

    rank: int
    ops: tuple[Op, ...]
    cuts: dict[int, int]
    """step -> index of its CUT op."""
    frozen_forward: frozenset[int]
    """F indices whose stage is updated before their last backward: they must not run on live weights
    that an update will overwrite (STASH, DOUBLE_BUFFER: frozen copy; CURRENT: aliased live weights)."""
    graph_end: dict[int, int]
    """F index -> index of the last backward op that reads its graph."""
    keep_on_update: frozenset[int]
    """Update indices after which the old version is still read: keep it (copy on write)."""
    releases: dict[int, tuple[tuple[int, int], ...]]
    """index -> (stage, version) pairs no longer read after that op."""
    send_index: dict[Message, int] = field(default_factory=dict)
    recv_index: dict[Message, int] = field(default_factory=dict)
    joins: dict[int, int | None] = field(default_factory=dict)
    """B/W index -> the version written by the update its weight gradient joins (schedules.semantics)."""
    messages: tuple[Message | None, ...] = ()
    """index -> the message the op sends or receives (None for ops that move nothing)."""
    settles: dict[Message, tuple[Message, ...]] = field(default_factory=dict)
    """A message this rank receives -> its own earlier sends that are surely delivered once it has
    arrived (see settled_sends): their buffers can be let go without waiting."""


def eval_ops(layout: Layout, rank: int, step: int, microbatches: int) -> list[Extra]:
    """Validation forwards of pipeline 0's stages on a rank, stage by stage, for one step boundary."""
    ops: list[Extra] = []
    for stage in layout.rank_stages(rank):
        if layout.pipeline(stage) != 0:
            continue
        prev, nxt = layout.prev_stage(stage), layout.next_stage(stage)
        for j in range(microbatches):
            if prev is not None and layout.placement[prev] != rank:
                ops.append(Extra(EVAL_RECV, stage, step, j))
            ops.append(Extra(EVAL_F, stage, step, j))
            if nxt is not None and layout.placement[nxt] != rank:
                ops.append(Extra(EVAL_SEND, stage, step, j))
    return ops


def last_updates(actions: tuple[Op, ...]) -> dict[int, int]:
    """step -> index of the rank's last update (OPT or RECV_W) of that step."""
    found: dict[int, int] = {}
    for index, action in enumerate(actions):
        if action.kind in UPDATE_KINDS:
            found[action.step] = index
    return found


def clips_globally(schedule: Schedule, grad_clip: float) -> bool:
    """Whether the steps get a NORM op: clipping on and a synchronous schedule. Asynchronous ones clip
    each stage by its own norm (their stages update at different times: no global norm exists)."""
    return grad_clip > 0 and schedule.versioning is Versioning.FLUSH


def with_norms(actions: tuple[Action, ...], rank: int) -> tuple[Op, ...]:
    """The actions with one NORM per step before its OPTs, the OPTs of that step gathered after it."""
    backward_kinds = GRAPH_KINDS | {Kind.RECV_G}
    last_backward = {a.step: i for i, a in enumerate(actions) if a.kind in backward_kinds}
    ops: list[Op] = []
    held: dict[int, list[Action]] = defaultdict(list)  # step -> OPTs waiting for the NORM
    normed: set[int] = set()
    for index, action in enumerate(actions):
        step = action.step
        if action.kind is Kind.OPT and index < last_backward.get(step, -1):
            held[step].append(action)  # another stage of this rank still computes gradients
            continue
        if any(action.stage == opt.stage for opts in held.values() for opt in opts):
            raise ValueError(f"rank {rank}: {action} comes between its stage's OPT and the step's NORM")
        if action.kind is Kind.OPT and step not in normed:
            normed.add(step)
            ops.append(Extra(NORM, -1, step))
            ops += held.pop(step, [])
        ops.append(action)
    if held:
        raise ValueError(f"rank {rank} has no OPT after its last backward of step {min(held)}")
    return tuple(ops)


def build_ops(
    schedule: Schedule,
    rank: int,
    *,
    val_steps: frozenset[int],
    val_microbatches: int,
    grad_clip: float = 0.0,
) -> tuple[tuple[Op, ...], dict[int, int]]:
    """The rank's program and the index of each step's CUT op."""
    actions = schedule.actions[rank]
    if clips_globally(schedule, grad_clip):
        actions = with_norms(actions, rank)
    spots = {index: step for step, index in last_updates(actions).items()}
    missing = sorted(set(range(schedule.steps)) - set(spots.values()))
    if missing:
        raise ValueError(f"rank {rank} has no update in step {missing[0]}: no place for its step boundary")
    ops: list[Op] = []
    cuts: dict[int, int] = {}
    for index, action in enumerate(actions):
        ops.append(action)
        if index in spots:
            step = spots[index]
            if step in val_steps:
                ops += eval_ops(schedule.layout, rank, step, val_microbatches)
            cuts[step] = len(ops)
            ops.append(Extra(CUT, -1, step))
    return tuple(ops), cuts


def _version_analysis(ops: tuple[Op, ...], versioning: Versioning, checkpoint_cuts: list[int]):
    """frozen forwards, graph ends, updates that keep the old version, and release points."""
    graph_end: dict[int, int] = {}
    forward_at: dict[MicrobatchKey, int] = {}
    updates: dict[int, list[int]] = defaultdict(list)  # stage -> update indices, ascending
    last_reader: dict[tuple[int, int], int] = {}  # (stage, version) -> last op reading it
    for index, op in enumerate(ops):
        if op.kind is Kind.F:
            forward_at[MicrobatchKey.of(op)] = index
        elif op.kind in GRAPH_KINDS:
            graph_end[forward_at[MicrobatchKey.of(op)]] = index
        if op.kind in UPDATE_KINDS:
            updates[op.stage].append(index)
        if op.kind in COMPUTE_KINDS:
            last_reader[op.stage, op.version] = index
    frozen = frozenset(f for f, end in graph_end.items() if _first_after(updates[ops[f].stage], f) < end)
    last_end: dict[tuple[int, int], int] = {}  # (stage, version) -> last backward of a forward on it
    for f, end in graph_end.items():
        key = (ops[f].stage, ops[f].version)
        last_end[key] = max(last_end.get(key, -1), end)
    keep: set[int] = set()
    releases: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for stage, indices in updates.items():
        for u in indices:
            old = ops[u].version - 1
            if versioning is Versioning.CURRENT:  # kept only for a checkpoint: see _last_cut_before
                last = _last_cut_before(checkpoint_cuts, u, last_end.get((stage, old), -1))
            else:
                last = last_reader.get((stage, old), -1)
                last = last if last > u else None
            if last is not None:
                keep.add(u)
                releases[last].append((stage, old))
    return frozen, graph_end, frozenset(keep), {i: tuple(sorted(v)) for i, v in releases.items()}


def _first_after(indices: list[int], index: int) -> float:
    """The first of the ascending `indices` after `index` (infinity if none)."""
    position = bisect.bisect_right(indices, index)
    return indices[position] if position < len(indices) else math.inf


def _last_cut_before(cuts: list[int], update: int, end: int) -> int | None:
    """CURRENT never stashes, but a checkpoint cut after an update, while forwards on the old version are
    still in flight (their backward ends by `end`), needs the old values to recompute those forwards on
    resume. Returns the last such cut (the old version is released after it), or None."""
    position = bisect.bisect_left(cuts, end) - 1
    return cuts[position] if position >= 0 and cuts[position] > update else None


def build_plans(
    schedule: Schedule,
    *,
    val_steps: frozenset[int] = frozenset(),
    val_microbatches: int = 1,
    checkpoint_steps: frozenset[int] = frozenset(),
    grad_clip: float = 0.0,
) -> list[RankPlan]:
    """One RankPlan per rank, with the message indices filled in for every rank. grad_clip > 0 on a
    synchronous schedule adds the NORM ops (see clips_globally)."""
    joined = _joins(schedule)
    built = []
    for rank in range(schedule.ranks):
        ops, cuts = build_ops(
            schedule, rank, val_steps=val_steps, val_microbatches=val_microbatches, grad_clip=grad_clip
        )
        messages = tuple(message_of(op, schedule.layout) for op in ops)
        sends, recvs = {}, {}
        for index, (op, message) in enumerate(zip(ops, messages, strict=True)):
            if message is not None:
                (sends if is_send(op) else recvs)[message] = index
        built.append((ops, cuts, messages, sends, recvs))
    settles = settled_sends([(b[3], b[4]) for b in built], schedule.layout.placement)
    plans = []
    for rank, (ops, cuts, messages, sends, recvs) in enumerate(built):
        checkpoint_cuts = sorted(index for step, index in cuts.items() if step in checkpoint_steps)
        frozen, graph_end, keep, releases = _version_analysis(ops, schedule.versioning, checkpoint_cuts)
        plans.append(
            RankPlan(
                rank=rank,
                ops=ops,
                cuts=cuts,
                frozen_forward=frozen,
                graph_end=graph_end,
                keep_on_update=keep,
                releases=releases,
                send_index=sends,
                recv_index=recvs,
                joins={i: joined[rank, op.key] for i, op in enumerate(ops) if op.kind in WEIGHT_GRAD_KINDS},
                messages=messages,
                settles=settles[rank],
            )
        )
    return plans


def settled_sends(
    indices: list[tuple[dict[Message, int], dict[Message, int]]], placement: tuple[int, ...]
) -> list[dict[Message, tuple[Message, ...]]]:
    """Per rank: received message Y -> the rank's sends X that Y's arrival proves delivered.

    `indices[rank]` is (send index, receive index) of that rank's program. X, sent by rank a to rank b,
    is settled by the first message Y that b sends back to a after its receive of X: b posts X's
    receive no later than it starts Y's send, so once a holds Y, X's transfer needs nothing more from
    b's program (waiting for it cannot deadlock) and its buffer can go. (gloo's send handles complete
    only when waited for: without this, every send of a run would stay held until its end.)

        rank a:  SEND X ............ RECV Y: X settled
        rank b:  ...... RECV X .. SEND Y
    """
    back: dict[tuple[int, int], list[tuple[int, Message]]] = defaultdict(list)  # (from, to) -> sends
    for rank, (sends, _) in enumerate(indices):
        for message, index in sends.items():
            back[rank, placement[message.dst]].append((index, message))
    starts = {pair: sorted(index for index, _ in sent) for pair, sent in back.items()}
    replies = {pair: [m for _, m in sorted(sent, key=lambda item: item[0])] for pair, sent in back.items()}
    settles: list[dict[Message, list[Message]]] = [defaultdict(list) for _ in indices]
    for rank, (sends, _) in enumerate(indices):
        for message in sorted(sends, key=sends.__getitem__):
            peer = placement[message.dst]
            received = indices[peer][1].get(message)
            if received is None or (peer, rank) not in starts:
                continue
            position = bisect.bisect_right(starts[peer, rank], received)
            if position < len(starts[peer, rank]):
                settles[rank][replies[peer, rank][position]].append(message)
    return [{reply: tuple(sent) for reply, sent in mine.items()} for mine in settles]


def _joins(schedule: Schedule) -> dict[tuple[int, tuple], int | None]:
    """(rank, action key) -> the version its update writes, for every weight-gradient action."""
    return {(c.rank, c.action.key): c.version for c in contributions(schedule)}


def pair_orders(plans: list[RankPlan], layout: Layout) -> dict[tuple[int, int], list[Message]]:
    """(sender rank, receiver rank) -> messages in the sender's order: receivers post in this order,
    which keeps transports that match by order (NCCL) correct whatever the receiver's own order is."""
    orders: dict[tuple[int, int], list[Message]] = defaultdict(list)
    for plan in plans:
        for op in plan.ops:
            message = message_of(op, layout)
            if message is not None and is_send(op):
                orders[plan.rank, layout.placement[message.dst]].append(message)
    return dict(orders)


def eager_receives(
    plan: RankPlan, orders: dict[tuple[int, int], list[Message]], placement: tuple[int, ...]
) -> frozenset[Message]:
    """The messages a rank receives after whose take it posts the same peer's next one at once (gloo):
    those where the rank sends the peer nothing before that next receive. Where it does send first, the
    receive is posted right after that send (one batch) instead: posted earlier, its notice crosses
    the peer's send while both ranks compute, and in 1F1B's ping-pong that cost a latency tail of
    milliseconds per message (benchmarks/bench_executor.py)."""
    sends_to: dict[int, list[int]] = defaultdict(list)  # peer -> this rank's send indices, ascending
    for message, index in sorted(plan.send_index.items(), key=lambda item: item[1]):
        sends_to[placement[message.dst]].append(index)
    eager = set()
    for (src, dst), messages in orders.items():
        if dst != plan.rank:
            continue
        for taken, upcoming in itertools.pairwise(messages):
            begin, end = plan.recv_index.get(taken, -1), plan.recv_index.get(upcoming, -1)
            sends = sends_to[src]
            if begin < end and bisect.bisect_left(sends, end) == bisect.bisect_right(sends, begin):
                eager.add(taken)
    return frozenset(eager)


def stuck_ranks(plans: list[RankPlan], layout: Layout) -> list[tuple[int, Op]]:
    """Walk every program knowing only which messages were sent (sends never block; a NORM waits for
    every rank's NORM of its step): the ranks that cannot finish, with the op each waits on. [] means
    the programs cannot deadlock."""
    sent: set[Message] = set()
    arrived: dict[int, set[int]] = defaultdict(set)  # step -> ranks that reached its NORM
    position = [0] * len(plans)
    moved = True
    while moved:
        moved = False
        for plan in plans:
            index = position[plan.rank]
            while index < len(plan.ops):
                op = plan.ops[index]
                if op.kind == NORM:
                    arrived[op.step].add(plan.rank)
                    if len(arrived[op.step]) < len(plans):
                        break
                message = message_of(op, layout)
                if message is not None and not is_send(op) and message not in sent:
                    break
                if message is not None:
                    sent.add(message)
                index += 1
            moved |= index != position[plan.rank]
            position[plan.rank] = index
    return [
        (plan.rank, plan.ops[position[plan.rank]]) for plan in plans if position[plan.rank] < len(plan.ops)
    ]

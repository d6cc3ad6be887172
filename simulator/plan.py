"""Pre-resolve a lowered schedule and a cost model into flat arrays that the engine walks.

    plan = make_plan(schedule, costs)     # once per (schedule, costs); O(actions)

Everything that does not depend on simulated time is decided here, so the engine's hot loop does no
dictionary lookups: per rank, parallel lists of the action's class (compute, send, receive), its duration
(jitter and stragglers applied), its bytes, and for communication the index of the message it sends or
waits for and of the link it travels on.

Note: message and link numbering.

    message g  = the g-th message met in rank-major program order (by its send or its receive first);
                 the send and the receive of one message store the same g
    link       = src_rank * P + dst_rank  (directed: a link has one sender, links are full duplex)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import compress

from schedules.costs import share_overlap
from schedules.errors import UserError
from schedules.ir import RECV_KINDS, SEND_KINDS, Action, Kind, Layout, Schedule
from schedules.semantics import message
from simulator.costs import EMPIRICAL, CostModel, StageCost
from simulator.links import link_index

COMPUTE, SEND, RECV = 0, 1, 2


class SimulationError(UserError):
    """The schedule cannot run (a receive with no send, a deadlock); the message names the rank."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Flat per-rank arrays; index i of every list is action i of that rank."""

    schedule: Schedule
    """The lowered schedule the arrays describe."""
    costs: CostModel
    """The cost model they were resolved with."""
    classes: list[list[int]]
    """COMPUTE, SEND or RECV."""
    durations: list[list[float]]
    """Seconds: compute time, or the time a send holds its link (latency + bytes / bandwidth); 0 for RECV."""
    nbytes: list[list[int]]
    """Bytes moved by a send or receive, 0 for compute."""
    messages: list[list[int]]
    """Message index of a send or receive (-1 for compute)."""
    links: list[list[int]]
    """Link index of a send (-1 otherwise)."""
    num_messages: int
    """Messages in the schedule (one per send)."""
    host: list[list[float]] | None = None
    """Seconds of host time before each action (StageCost.host_*): the rank is busy but computes nothing;
    None when the cost model has none (the engine then skips it)."""

    @property
    def num_actions(self) -> int:
        return sum(len(classes) for classes in self.classes)


def make_plan(schedule: Schedule, costs: CostModel) -> Plan:
    """Resolve durations, bytes, messages and links for every action; raise SimulationError if a
    receive has no matching send."""
    costs.check_stages(schedule.layout.stages_per_pipeline // schedule.chunks)
    templates = _templates(schedule, costs)
    draw = _jitter(costs, random.Random(costs.seed))
    wire = _link_jitter(costs)
    message_ids: dict[tuple, int] = {}  # message -> its index, claimed by its send or its receive
    senders: set[int] = set()
    classes, durations, nbytes, messages, links = [], [], [], [], []
    for rank, actions in enumerate(schedule.actions):
        try:
            rows = [templates[a.stage][a.kind](a) for a in actions]
        except (KeyError, IndexError):
            raise SimulationError(_unplaceable(schedule, rank, templates)) from None
        columns = map(list, zip(*rows, strict=True)) if rows else ([], [], [], [], [])
        kinds, seconds, sizes, rank_links, keys = columns  # class, seconds, bytes, link, message key
        classes.append(kinds)
        seconds = _durations(rows, costs.straggler_factor(rank), draw, wire, seconds)
        durations.append(share_overlap(seconds, actions, costs.overlap_f_b))  # OVERLAP_F_B pairs
        _add_warmup(schedule, costs, actions, durations[-1])
        nbytes.append(sizes)
        links.append(rank_links)
        claim = message_ids.setdefault
        numbered = [-1 if key is None else claim(key, len(message_ids)) for key in keys]
        senders.update(compress(numbered, [cls == SEND for cls in kinds]))
        messages.append(numbered)
    if len(senders) < len(message_ids):
        _report_unmatched(schedule, message_ids, senders)
    host = _host_times(schedule, costs)
    return Plan(
        schedule=schedule,
        costs=costs,
        classes=classes,
        durations=durations,
        nbytes=nbytes,
        messages=messages,
        links=links,
        num_messages=len(message_ids),
        host=host,
    )


HOST_OF_KIND = {
    Kind.F: "host_forward",
    Kind.B: "host_backward",
    Kind.I: "host_backward",
    Kind.W: "host_backward",
    Kind.OPT: "host_optimizer_step",
    **{kind: "host_send" for kind in SEND_KINDS},
    **{kind: "host_recv" for kind in RECV_KINDS},
}
"""Which StageCost host time comes before an action of each kind."""


def _host_times(schedule: Schedule, costs: CostModel) -> list[list[float]] | None:
    """Per rank, the host seconds before each action; None if the cost model has no host time."""
    if not any(entry.has_host_time for entry in costs.stages):
        return None
    table = [
        {
            Kind.OVERLAP_F_B: 0.0,  # a marker: its halves have their own host time
            **{
                kind: getattr(virtual_stage_cost(schedule, costs, stage)[0], name)
                for kind, name in HOST_OF_KIND.items()
            },
        }
        for stage in range(schedule.num_stages)
    ]
    return [[table[a.stage][a.kind] for a in actions] for actions in schedule.actions]


def _durations(
    rows: list[tuple],
    slow: float,
    draw: Callable[[], float] | None,
    wire: Callable[[], float] | None,
    seconds: list[float],
) -> list[float]:
    """Seconds per action (`seconds`: each row's nominal time); compute scaled by the rank's straggler
    factor and the jitter, transfers by the link jitter, in program order."""
    if draw is None and wire is None and slow == 1.0:
        return seconds
    draw = draw or (lambda: 1.0)
    wire = wire or (lambda: 1.0)
    return [
        row[1] * slow * draw() if row[0] == COMPUTE else row[1] * wire() if row[0] == SEND else row[1]
        for row in rows
    ]


WARMUP_OF_KIND = {Kind.F: "warmup_forward", Kind.B: "warmup_backward", Kind.I: "warmup_backward"}
WARMUP_OF_KIND[Kind.OPT] = "warmup_optimizer_step"


def _add_warmup(schedule: Schedule, costs: CostModel, actions, durations: list[float]) -> None:
    """Add each stage's warm-up time (StageCost.warmup_*, / chunks) to its first F, backward and OPT."""
    if not any(entry.has_warmup for entry in costs.stages):
        return
    seen: set[tuple[int, str]] = set()
    for i, action in enumerate(actions):
        name = WARMUP_OF_KIND.get(action.kind)
        if name is not None and (action.stage, name) not in seen:
            seen.add((action.stage, name))
            entry, chunks = virtual_stage_cost(schedule, costs, action.stage)
            durations[i] += getattr(entry, name) / chunks


def _unplaceable(schedule: Schedule, rank: int, templates: list[dict]) -> str:
    for action in schedule.actions[rank]:
        if not 0 <= action.stage < len(templates) or action.kind not in templates[action.stage]:
            return f"rank {rank}: {action} has no neighbour stage to talk to (or no such stage)"
    return f"rank {rank}: an action names no stage of the layout"


def virtual_stage_cost(schedule: Schedule, costs: CostModel, stage: int) -> tuple[StageCost, int]:
    """The cost entry of a (virtual) stage and the divisor for its compute and sizes (= chunks)."""
    chunks = schedule.chunks
    return costs.stage(schedule.layout.depth(stage) // chunks), chunks


def _templates(schedule: Schedule, costs: CostModel) -> list[dict[Kind, Callable[[Action], tuple]]]:
    """Per virtual stage and kind, a function action -> (class, seconds, bytes, link, message).

    The message is schedules.semantics.message of the action, (what, sending stage, receiving stage,
    step, microbatch), built here as a plain tuple (equal to that Message) for speed: the same for a send
    and for the receive that waits for it.
    """
    layout, ranks = schedule.layout, schedule.ranks
    out = []
    for stage in range(schedule.num_stages):
        entry, chunks = virtual_stage_cost(schedule, costs, stage)
        weights = entry.weight_bytes // chunks
        times = {
            Kind.F: entry.forward / chunks,
            Kind.B: entry.backward / chunks,
            Kind.I: entry.input_grad / chunks,
            Kind.W: entry.weight_grad / chunks,
            Kind.OPT: entry.optimizer_step / chunks
            + costs.optimizer_sync_time(weights, entry.backward / chunks),
        }
        table: dict[Kind, Callable[[Action], tuple]] = {
            kind: _constant((COMPUTE, seconds, 0, -1, None)) for kind, seconds in times.items()
        }
        table[Kind.OVERLAP_F_B] = _constant((COMPUTE, 0.0, 0, -1, None))  # its halves take the pair's time
        rank = layout.placement[stage]
        activation = entry.activation_bytes
        for kind in (Kind.SEND_F, Kind.SEND_B, Kind.RECV_F, Kind.RECV_B):
            ends = message(layout, Action(stage, kind))  # the neighbour at the other end, if any
            if ends is None:
                continue
            if kind in SEND_KINDS:
                link = link_index(rank, layout.placement[ends.dst], ranks)
                seconds = costs.transfer_time(activation)
                table[kind] = _neighbour_send(ends.kind, stage, ends.dst, activation, seconds, link)
            else:
                table[kind] = _neighbour_recv(ends.kind, ends.src, stage, activation)
        for send, recv in ((Kind.SEND_G, Kind.RECV_G), (Kind.SEND_W, Kind.RECV_W)):
            what = message(layout, Action(stage, send, peer=stage)).kind  # type: ignore[union-attr]
            table[send] = _peer_send(what, stage, weights, costs.transfer_time(weights), rank, layout)
            table[recv] = _peer_recv(what, stage, weights)
        out.append(table)
    return out


def _constant(value: tuple) -> Callable[[Action], tuple]:
    return lambda action: value


def _neighbour_send(what: str, stage: int, target: int, size: int, seconds: float, link: int) -> Callable:
    return lambda a: (SEND, seconds, size, link, (what, stage, target, a.step, a.microbatch))


def _neighbour_recv(what: str, source: int, stage: int, size: int) -> Callable:
    return lambda a: (RECV, 0.0, size, -1, (what, source, stage, a.step, a.microbatch))


def _peer_send(what: str, stage: int, size: int, seconds: float, rank: int, layout: Layout) -> Callable:
    def template(a: Action) -> tuple:
        if a.peer is None or not 0 <= a.peer < layout.num_stages:
            raise SimulationError(f"{a} names no peer stage")
        link = link_index(rank, layout.placement[a.peer], layout.ranks)
        return (SEND, seconds, size, link, (what, stage, a.peer, a.step, a.microbatch))

    return template


def _peer_recv(what: str, stage: int, size: int) -> Callable:
    return lambda a: (RECV, 0.0, size, -1, (what, a.peer, stage, a.step, a.microbatch))


def _report_unmatched(schedule: Schedule, message_ids: dict[tuple, int], senders: set[int]) -> None:
    """Raise for the first receive with no send (a send nobody receives is harmless; validate() says)."""
    missing = set(range(len(message_ids))) - senders
    for rank, action in schedule.all_actions():
        if action.kind in RECV_KINDS and message_ids.get(message(schedule.layout, action)) in missing:
            raise SimulationError(f"rank {rank}: {action} has no matching send in the schedule")


def _jitter(costs: CostModel, rng: random.Random) -> Callable[[], float] | None:
    """A function returning the next compute-time factor (mean 1), drawn in program order; None = no
    jitter."""
    if costs.jitter == EMPIRICAL:
        return _draw_from(costs.jitter_factors, rng)
    sigma = costs.jitter_sigma
    if costs.jitter == "none" or sigma == 0:
        return None
    if costs.jitter == "normal":
        return lambda: max(0.0, 1.0 + sigma * rng.gauss(0.0, 1.0))
    if costs.jitter == "lognormal":
        return lambda: math.exp(sigma * rng.gauss(0.0, 1.0) - sigma * sigma / 2)
    return lambda: 1.0 + sigma * (2.0 * rng.random() - 1.0)


def _link_jitter(costs: CostModel) -> Callable[[], float] | None:
    """The next transfer-time factor, from its own random stream (so compute draws stay as they were)."""
    if not costs.link_jitter:
        return None
    return _draw_from(costs.link_jitter, random.Random(f"link-{costs.seed}"))


def _draw_from(factors: tuple[float, ...], rng: random.Random) -> Callable[[], float]:
    """Each factor equally likely, dealt from a shuffled deck of all of them (reshuffled when used up):
    any len(factors) consecutive draws average exactly the factors' mean, so a short run's total time is
    not at the mercy of a lucky or unlucky streak."""
    deck: list[float] = []

    def draw() -> float:
        if not deck:
            deck.extend(factors)
            rng.shuffle(deck)
        return deck.pop()

    return draw

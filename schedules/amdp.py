"""AMDP: asynchronous multi-directional pipelines (docs/schedules.md, docs/amdp.md), any even P.

N = P/2 pipelines each cross all P ranks; stage = pipeline * P + depth. Pipeline c starts on rank
2c + (c mod 2) and runs up the ranks if c is even, down if c is odd:

    P = 8, rank r holds depth [r, (11-r) mod 8, (4+r) mod 8, 7-r][c] of pipeline c (the reference code)
    P = 4: pipeline 0 on ranks 0 1 2 3, pipeline 1 on ranks 3 2 1 0

A round is P microbatch slots: slot k of round R is the global microbatch R*P + k and runs through
pipeline k mod N (two microbatches per pipeline per round); a step is m/P rounds. The order is the rule
below, which reproduces the authors' P = 8 order exactly (tests/schedules/test_async.py checks it):

- slot orders: a rank forwards a round's slots sorted by (depth + k // N, k), the tick at which the
  forward reaches it when each first stage starts its two slots at ticks 0 and 1, and backwards them sorted
  by (P-1-depth + k // N, k);
- interleaving: the unit-time list schedule of those two queues: every tick a rank runs the head of its
  forward queue if it is ready, else the head of its backward queue if ready; a first stage admits the
  round-R microbatches of its pipeline only after the backward of the pipeline's first round-(R-1) one;
- update of step i: after the rank's last forward of step i+1's first round (and its last backward of step
  i); the last one ends the run. Forwards before it and backwards after it see a one-step mismatch
  (P = 8: 7 on ranks 0, 3, 4, 7, 8 on the others). Ranks 0, 3, 4, 7 also run one last-stage backward of
  step i+1 before the update (the authors' order).

Step tags: a compute action's step is the minibatch its data comes from (its loss is logged there); an
update block's step (SEND_G .. RECV_W) is the update's index, writing version step + 1. Which update a
gradient joins is schedules.semantics' answer, as in the authors' code: the first one its rank runs
after it. So the last-stage backward of step i+1 that runs before update i joins update i, at the
version it replaces (delay 0 everywhere): with c such backwards per update (c = N at P = 4 and 8),
update 0 of the last depth sums m + c microbatch gradients, the last one m - c, all others m, each
microbatch's loss divided by m (docs/amdp.md; schedules.semantics.update_sizes counts them for any P).

Note: with P a multiple of 4 a round takes exactly 2P unit ticks (no steady-state bubble). With P = 2 mod 4
(our inference: the reference code covers P = 4 and 8) N is odd, the pipelines cannot pair up in opposite
directions and the unit-time order idles up to a quarter of each round (P = 2, 6, 10: 1/4; P = 14: 1/7).

Owners (ZeRO-1): depth d is owned by its pipeline-0 replica, stage d on rank d, so every rank owns one
depth and runs one OPT per update. The update block on a rank, deadlock-free because every send comes
before the first blocking receive:

    SEND_G (each replica it holds -> owner)  RECV_G x (N-1), OPT, SEND_W x (N-1) (its owned depth)
    RECV_W (each replica it holds <- owner)

    pipesim schedules show amdp -p 8 -m 16 --steps 2
"""

from __future__ import annotations

from collections import deque

from schedules.ir import Action, Kind, Layout, Schedule, ScheduleError, Versioning


def pipeline_rank(ranks: int, pipeline: int, depth: int) -> int:
    """The rank that holds `depth` of `pipeline`."""
    return (_first_rank(pipeline) + _direction(pipeline) * depth) % ranks


def pipeline_depth(ranks: int, pipeline: int, rank: int) -> int:
    """The depth of `pipeline` that `rank` holds (the inverse of `pipeline_rank`)."""
    return (_direction(pipeline) * (rank - _first_rank(pipeline))) % ranks


def _first_rank(pipeline: int) -> int:
    return 2 * pipeline + pipeline % 2


def _direction(pipeline: int) -> int:
    return 1 if pipeline % 2 == 0 else -1


def amdp_layout(ranks: int) -> Layout:
    """N = P/2 pipelines of P stages, placed by `pipeline_rank`."""
    pipelines = ranks // 2
    return Layout(
        ranks=ranks,
        stages_per_pipeline=ranks,
        pipelines=pipelines,
        placement=tuple(
            pipeline_rank(ranks, pipeline, depth) for pipeline in range(pipelines) for depth in range(ranks)
        ),
    )


def owner(layout: Layout, stage: int) -> int:
    """The replica that owns a stage's depth: its pipeline-0 copy (stage id = depth, on rank = depth)."""
    return layout.depth(stage)


def slot_stage(layout: Layout, rank: int, slot: int) -> int:
    """The stage through which `slot` of every round crosses `rank`."""
    pipeline = slot % layout.pipelines
    return pipeline * layout.ranks + pipeline_depth(layout.ranks, pipeline, rank)


def slot_orders(layout: Layout, rank: int) -> tuple[list[int], list[int]]:
    """(forward, backward) slot orders of a rank: slots by the tick their forward / backward arrives."""
    ranks, pipelines = layout.ranks, layout.pipelines

    def arrival(slot: int, hops: int) -> tuple[int, int]:
        return (hops + slot // pipelines, slot)

    depth = {slot: layout.depth(slot_stage(layout, rank, slot)) for slot in range(ranks)}
    forward = sorted(range(ranks), key=lambda slot: arrival(slot, depth[slot]))
    backward = sorted(range(ranks), key=lambda slot: arrival(slot, ranks - 1 - depth[slot]))
    return forward, backward


def compute_order(layout: Layout, rounds: int) -> list[list[tuple[Kind, int, int]]]:
    """Each rank's (kind, round, slot) order: the unit-time list schedule described in the docstring."""
    queues = {}
    for rank in range(layout.ranks):
        forward, backward = slot_orders(layout, rank)
        queues[rank, Kind.F] = deque((rnd, slot) for rnd in range(rounds) for slot in forward)
        queues[rank, Kind.B] = deque((rnd, slot) for rnd in range(rounds) for slot in backward)
    done: dict[tuple[Kind, int, int, int], int] = {}  # (kind, stage, round, slot) -> tick
    order: list[list[tuple[Kind, int, int]]] = [[] for _ in range(layout.ranks)]
    tick = 0
    while any(queues.values()):
        kinds = [_ready_kind(layout, queues, done, tick, rank) for rank in range(layout.ranks)]
        chosen = [(rank, kind) for rank, kind in enumerate(kinds) if kind is not None]
        if not chosen:
            raise RuntimeError(f"AMDP order stalled at tick {tick} (a bug in the rule)")
        for rank, kind in chosen:
            rnd, slot = queues[rank, kind].popleft()
            done[kind, slot_stage(layout, rank, slot), rnd, slot] = tick
            order[rank].append((kind, rnd, slot))
        tick += 1
    return order


def _ready_kind(layout: Layout, queues: dict, done: dict, tick: int, rank: int) -> Kind | None:
    """F if the rank's head forward is ready at `tick`, else B if its head backward is, else None."""

    def finished(kind: Kind, stage: int, rnd: int, slot: int) -> bool:
        return done.get((kind, stage, rnd, slot), tick) < tick

    for kind in (Kind.F, Kind.B):
        if not queues[rank, kind]:
            continue
        rnd, slot = queues[rank, kind][0]
        stage = slot_stage(layout, rank, slot)
        if kind is Kind.F and layout.is_first(stage):
            # admission: the pipeline's first microbatch of the previous round has come back
            ready = rnd == 0 or finished(Kind.B, stage, rnd - 1, layout.pipeline(stage))
        elif kind is Kind.F:
            ready = finished(Kind.F, stage - 1, rnd, slot)
        else:
            ready = finished(Kind.F, stage, rnd, slot) and (
                layout.is_last(stage) or finished(Kind.B, stage + 1, rnd, slot)
            )
        if ready:
            return kind
    return None


def update_block(layout: Layout, rank: int, step: int) -> list[Action]:
    """Reduce the step's gradients to the owners, update, broadcast the weights back (ZeRO-1)."""
    held = layout.rank_stages(rank)
    shared = [stage for stage in held if owner(layout, stage) != stage]
    block = [Action(stage, Kind.SEND_G, None, step, peer=owner(layout, stage)) for stage in shared]
    for stage in held:
        if owner(layout, stage) != stage:
            continue
        replicas = [replica for replica in layout.replicas(stage) if replica != stage]
        block += [Action(stage, Kind.RECV_G, None, step, peer=replica) for replica in replicas]
        block.append(Action(stage, Kind.OPT, None, step))
        block += [Action(stage, Kind.SEND_W, None, step, peer=replica) for replica in replicas]
    block += [Action(stage, Kind.RECV_W, None, step, peer=owner(layout, stage)) for stage in shared]
    return block


def _update_spots(order: list[tuple[Kind, int, int]], rounds_per_step: int) -> dict[int, int]:
    """Index in a rank's order after which the update of each step goes."""
    spots: dict[int, int] = {}
    for index, (kind, rnd, _slot) in enumerate(order):
        step = rnd // rounds_per_step
        if kind is Kind.B:  # never before the step's own last backward
            spots[step] = max(spots.get(step, index), index)
        elif rnd % rounds_per_step == 0 and step > 0:  # the next step's first-round forwards
            spots[step - 1] = max(spots.get(step - 1, index), index)
    return {index: step for step, index in spots.items()}


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    """Compute actions in the rule's order plus the update blocks; `lower()` adds versions and comms."""
    if ranks < 2 or ranks % 2:
        raise ScheduleError(f"amdp needs an even number of stages P, got P = {ranks}")
    if microbatches < ranks or microbatches % ranks:
        raise ScheduleError(
            f"amdp needs microbatches m to be a multiple of stages P, got m = {microbatches}, P = {ranks}"
        )
    layout = amdp_layout(ranks)
    rounds_per_step = microbatches // ranks
    actions = []
    for rank, order in enumerate(compute_order(layout, steps * rounds_per_step)):
        spots = _update_spots(order, rounds_per_step)
        rank_actions: list[Action] = []
        # warm-up: the first round fills all pipelines; steady: each step's first round carries the
        # previous step's update; cool-down: the last backwards drain, then the last update
        for index, (kind, rnd, slot) in enumerate(order):
            j = rnd * ranks + slot
            stage = slot_stage(layout, rank, slot)
            rank_actions.append(Action(stage, kind, j % microbatches, j // microbatches))
            if index in spots:
                rank_actions += update_block(layout, rank, spots[index])
        actions.append(rank_actions)
    return Schedule(
        name="amdp",
        layout=layout,
        microbatches=microbatches,
        steps=steps,
        versioning=Versioning.CURRENT,
        actions=tuple(tuple(rank_actions) for rank_actions in actions),
    )

"""Tests of the asynchronous generators pipedream, 2bw and amdp against docs/schedules.md:
action lists, weight-version rules, AMDP's reference order for P = 8, deadlock freedom.

    .venv/bin/pytest tests/schedules/test_async.py
"""

from __future__ import annotations

import pytest

from schedules import build
from schedules.amdp import amdp_layout, owner, pipeline_rank, slot_orders
from schedules.amdp import generate as generate_amdp
from schedules.ir import MATCHING, Action, Kind, Layout, Schedule, ScheduleError, parse_action

# ---------------------------------------------------------------------------------------------------------
# A dependency-only checker: each rank runs its list strictly in order, one action per tick, sends never
# block, receives (and compute actions) wait for what they need. A tick in which nothing runs is a deadlock.


def _needs(layout: Layout, action: Action) -> list[tuple]:
    """Keys (Action.key) of the actions that must have run before `action` can start."""
    stage, kind, microbatch, step = action.stage, action.kind, action.microbatch, action.step
    if kind is Kind.RECV_F:
        return [(stage - 1, Kind.SEND_F, microbatch, step, None)]
    if kind is Kind.RECV_B:
        return [(stage + 1, Kind.SEND_B, microbatch, step, None)]
    if kind in (Kind.RECV_G, Kind.RECV_W):
        return [(action.peer, MATCHING[kind], None, step, stage)]
    if kind is Kind.F and not layout.is_first(stage):
        return [(stage - 1, Kind.F, microbatch, step, None)]
    if kind is Kind.B:
        needs = [(stage, Kind.F, microbatch, step, None)]
        return needs if layout.is_last(stage) else [*needs, (stage + 1, Kind.B, microbatch, step, None)]
    return []


def run_in_order(schedule: Schedule) -> int:
    """Run the schedule as described above; return the ticks it took, fail naming the stuck heads."""
    done: dict[tuple, int] = {}
    position = [0] * schedule.ranks
    tick = 0
    while any(position[rank] < len(actions) for rank, actions in enumerate(schedule.actions)):
        heads = [
            (rank, actions[position[rank]])
            for rank, actions in enumerate(schedule.actions)
            if position[rank] < len(actions)
        ]
        ready = [
            (rank, head)
            for rank, head in heads
            if all(done.get(key, tick) < tick for key in _needs(schedule.layout, head))
        ]
        assert ready, f"deadlock at tick {tick}: " + ", ".join(f"rank {r} waits at {a}" for r, a in heads)
        for rank, head in ready:
            done[head.key] = tick
            position[rank] += 1
        tick += 1
    return tick


def text(actions) -> str:
    return " ".join(str(action) for action in actions)


def global_microbatch(action: Action, microbatches: int) -> int:
    return action.step * microbatches + action.microbatch


# ---------------------------------------------------------------------------------------------------------
# Tiny cases in the IR's own notation, derived by hand from docs/schedules.md.

TEXT_CASES = [
    # PipeDream, P=2: stage 0 warms up with one forward, so the step boundary falls inside the steady
    # phase (0F0@s1 before 0B1); forward j reads max(0, j-1), its backward the same, OPT after it j+1.
    (
        "pipedream",
        2,
        2,
        2,
        [
            "0F0@v0 0SEND_F0 0F1@v0 0SEND_F1 0RECV_B0 0B0@v0 0OPT0@v1 0F0@s1v1 0SEND_F0@s1 0RECV_B1 0B1@v0"
            " 0OPT1@v2 0F1@s1v2 0SEND_F1@s1 0RECV_B0@s1 0B0@s1v1 0OPT0@s1v3 0RECV_B1@s1 0B1@s1v2 0OPT1@s1v4",
            "1RECV_F0 1F0@v0 1B0@v0 1SEND_B0 1OPT0@v1 1RECV_F1 1F1@v1 1B1@v1 1SEND_B1 1OPT1@v2"
            " 1RECV_F0@s1 1F0@s1v2 1B0@s1v2 1SEND_B0@s1 1OPT0@s1v3 1RECV_F1@s1 1F1@s1v3 1B1@s1v3"
            " 1SEND_B1@s1 1OPT1@s1v4",
        ],
    ),
    # 2BW, same order: one OPT per stage per step after its last backward; step 1 still reads W(0).
    (
        "2bw",
        2,
        2,
        2,
        [
            "0F0@v0 0SEND_F0 0F1@v0 0SEND_F1 0RECV_B0 0B0@v0 0F0@s1v0 0SEND_F0@s1 0RECV_B1 0B1@v0 0OPT@v1"
            " 0F1@s1v0 0SEND_F1@s1 0RECV_B0@s1 0B0@s1v0 0RECV_B1@s1 0B1@s1v0 0OPT@s1v2",
            "1RECV_F0 1F0@v0 1B0@v0 1SEND_B0 1RECV_F1 1F1@v0 1B1@v0 1SEND_B1 1OPT@v1 1RECV_F0@s1 1F0@s1v0"
            " 1B0@s1v0 1SEND_B0@s1 1RECV_F1@s1 1F1@s1v0 1B1@s1v0 1SEND_B1@s1 1OPT@s1v2",
        ],
    ),
    # AMDP, P=2: one pipeline, no replicas, so an update is a bare OPT. Unit-time rule: rank 0 admits
    # round 1 after B0 comes back, runs both its forwards, then B1 of step 0, then the update; step 1's
    # forwards before it read version 0 and their backwards version 1 (the one-step mismatch).
    (
        "amdp",
        2,
        2,
        2,
        [
            "0F0@v0 0SEND_F0 0F1@v0 0SEND_F1 0RECV_B0 0B0@v0 0F0@s1v0 0SEND_F0@s1 0F1@s1v0 0SEND_F1@s1"
            " 0RECV_B1 0B1@v0 0OPT@v1 0RECV_B0@s1 0B0@s1v1 0RECV_B1@s1 0B1@s1v1 0OPT@s1v2",
            "1RECV_F0 1F0@v0 1RECV_F1 1F1@v0 1B0@v0 1SEND_B0 1B1@v0 1SEND_B1 1RECV_F0@s1 1F0@s1v0"
            " 1RECV_F1@s1 1F1@s1v0 1OPT@v1 1B0@s1v1 1SEND_B0@s1 1B1@s1v1 1SEND_B1@s1 1OPT@s1v2",
        ],
    ),
]


@pytest.mark.parametrize("name, ranks, microbatches, steps, expected", TEXT_CASES)
def test_tiny_schedules_in_text_form(name, ranks, microbatches, steps, expected):
    schedule = build(name, ranks, microbatches, steps)
    assert [text(actions) for actions in schedule.actions] == expected
    assert all(parse_action(str(action)) == action for _, action in schedule.all_actions())


def test_amdp_p4_compute_order_in_text_form():
    # Two pipelines in opposite directions (stages 4..7 on ranks 3..0). Rank 0 holds the first stage of
    # pipeline 0 and the last of pipeline 1, so its round is F F B F B F [U] B B; the update block reduces
    # stage 7's gradient to its owner, stage 3, and receives stage 4's for its own stage 0.
    schedule = generate_amdp(4, 4, 2)
    assert text(schedule.actions[0]) == (
        "0F0 0F2 7F1 7B1 7F3 7B3 0B0 0F0@s1 0F2@s1 0B2 7F1@s1 7B1@s1 7F3@s1"
        " 7SEND_G>3 0RECV_G>4 0OPT 0SEND_W>4 7RECV_W>3 7B3@s1 0B0@s1 0B2@s1"
        " 7SEND_G@s1>3 0RECV_G@s1>4 0OPT@s1 0SEND_W@s1>4 7RECV_W@s1>3"
    )


# ---------------------------------------------------------------------------------------------------------
# PipeDream: forward of global microbatch j at stage s reads max(0, j - w_s), w_s = P-1-s; the backward
# reads the same; the OPT after it writes j+1; delay P-1-s; at most P-s versions live.

PIPEDREAM_CASES = [
    (2, 2, 3),  # smallest pipeline; the step boundary falls inside the steady phase every step
    (4, 4, 2),  # m = P: stage 0's warm-up reaches three microbatches into the next step
    (4, 7, 3),  # m not a multiple of P: step boundaries land at odd places in the stream
    (8, 8, 1),  # one step that never reaches a steady state at stage 0 (needs 2*7+1 microbatches)
    (8, 17, 2),  # long run: every stage reaches its steady state, P-s versions live
    (1, 3, 2),  # a single stage: no pipeline at all, update after every microbatch, delay 0
]


@pytest.mark.parametrize("ranks, microbatches, steps", PIPEDREAM_CASES)
def test_pipedream_versions(ranks, microbatches, steps):
    schedule = build("pipedream", ranks, microbatches, steps)
    total = steps * microbatches
    for stage, actions in enumerate(schedule.actions):
        warm = ranks - 1 - stage
        stashed: dict[int, int] = {}  # in-flight global microbatch -> version its forward read
        current, live, delays, last_backward = 0, 0, [], None
        for action in actions:
            if action.kind not in (Kind.F, Kind.B, Kind.OPT):
                continue
            j = global_microbatch(action, microbatches)
            if action.kind is Kind.OPT:
                assert action.version == j + 1 and last_backward[0] == j  # right after its backward
                delays.append(j - last_backward[1])
                current = action.version
                continue
            assert action.version == max(0, j - warm), str(action)
            if action.kind is Kind.F:
                stashed[j] = action.version
                live = max(live, len(set(stashed.values()) | {current}))
            else:
                assert stashed.pop(j) == action.version
                last_backward = (j, action.version)
        assert len(delays) == total
        assert max(delays) == min(warm, total - 1)  # tau_s = P-1-s once the stream is long enough
        assert live <= ranks - stage
        if total > 2 * warm:
            assert live == ranks - stage


# ---------------------------------------------------------------------------------------------------------
# 2BW: walk each rank's list with a simulated pair of buffers following the reference code's rule, and
# check that every action reads the version the static order was given.


def walk_two_buffers(actions: tuple[Action, ...], warm: int) -> list[int]:
    """Replay one stage; return the delay of each update. Asserts the rule at every action."""
    older = newer = 0  # versions held by the two buffers: both W(0) at the start
    updates, gradient_versions, delays = 0, set(), []
    for action in actions:
        if action.kind is Kind.F:
            if action.step == updates:  # the rest of the current minibatch: older buffer
                assert action.version == older, str(action)
            else:  # the first w_s microbatches of the next minibatch: newer buffer
                assert (action.step, action.microbatch < warm) == (updates + 1, True), str(action)
                assert action.version == newer, str(action)
        elif action.kind is Kind.B:  # backward: always the older buffer, always the current minibatch
            assert (action.step, action.version) == (updates, older), str(action)
            gradient_versions.add(action.version)
        elif action.kind is Kind.OPT:
            assert action.step == updates
            # copy newer -> older, apply the accumulated gradient there, swap:
            # W(k+1) = W(k) - lr * U(grad f(W(k-1))), minibatches 0 and 1 both at W(0)
            assert newer == updates and gradient_versions == {max(0, updates - 1)}
            older, newer = newer, newer + 1
            assert action.version == newer
            delays.append(older - max(0, updates - 1))
            updates, gradient_versions = updates + 1, set()
            assert older != newer  # two versions live from the first update on
    return delays


TWO_BW_CASES = [
    (2, 2, 3),  # m = P = 2: one forward of the next step runs before every update
    (4, 4, 3),  # m = P: stage 0 runs three forwards on the newer buffer before each update
    (4, 6, 2),  # m > P, not a multiple
    (5, 7, 4),  # odd P, four steps: the pattern repeats step after step
    (8, 16, 3),  # the example size
]


@pytest.mark.parametrize("ranks, microbatches, steps", TWO_BW_CASES)
def test_2bw_static_versions_realise_the_two_buffer_rule(ranks, microbatches, steps):
    schedule = build("2bw", ranks, microbatches, steps)
    for stage, actions in enumerate(schedule.actions):
        delays = walk_two_buffers(actions, warm=ranks - 1 - stage)
        assert delays == [0] + [1] * (steps - 1)  # delay 1 from step 1 on
        versions = {a.version for a in actions if a.kind in (Kind.F, Kind.B) and a.step == steps - 1}
        assert versions == {max(0, steps - 2)}


# ---------------------------------------------------------------------------------------------------------
# AMDP: placement, owners, the authors' P = 8 order, mismatches, in-flight counts, versions.

APPENDIX_SLOT_ORDERS = {  # rank: (forward slot order, backward slot order), the authors' released code
    0: ("0 4 1 2 5 6 3 7", "3 7 2 1 6 5 0 4"),
    1: ("0 1 4 5 2 3 6 7", "3 2 7 6 1 0 5 4"),
    2: ("1 0 5 4 3 2 7 6", "2 3 6 7 0 1 4 5"),
    3: ("1 5 0 3 4 7 2 6", "2 6 3 0 7 4 1 5"),
    4: ("2 6 3 0 7 4 1 5", "1 5 0 3 4 7 2 6"),
    5: ("2 3 6 7 0 1 4 5", "1 0 5 4 3 2 7 6"),
    6: ("3 2 7 6 1 0 5 4", "0 1 4 5 2 3 6 7"),
    7: ("3 7 2 1 6 5 0 4", "0 4 1 2 5 6 3 7"),
}
FIRST_LAST_RANKS = {0, 3, 4, 7}  # P = 8 ranks holding a first and a last stage
ROUND_PATTERN = {  # per round; [U] only in the first round of every iteration after the first
    True: "F F B F F F F F B F U B B B B B B",
    False: "B F F F F F F F F U B B B B B B B",
}


def test_amdp_placement_matches_the_reference_code():
    layout = amdp_layout(8)
    for rank in range(8):
        expected = [rank, (11 - rank) % 8, (4 + rank) % 8, 7 - rank]
        for pipeline, depth in enumerate(expected):
            assert layout.placement[pipeline * 8 + depth] == rank
            assert pipeline_rank(8, pipeline, depth) == rank
    # P = 4: two pipelines in opposite directions
    assert amdp_layout(4).placement == (0, 1, 2, 3, 3, 2, 1, 0)


@pytest.mark.parametrize("ranks", [2, 4, 6, 8, 10, 16])
def test_amdp_replicas_on_distinct_ranks_and_one_owned_depth_per_rank(ranks):
    layout = amdp_layout(ranks)
    for rank in range(ranks):
        assert sorted(layout.pipeline(stage) for stage in layout.rank_stages(rank)) == list(range(ranks // 2))
    for depth in range(ranks):
        replicas = layout.replicas(depth)
        assert len({layout.placement[stage] for stage in replicas}) == ranks // 2
        assert {owner(layout, stage) for stage in replicas} == {depth}
    owner_ranks = sorted(layout.placement[owner(layout, depth)] for depth in range(ranks))
    assert owner_ranks == list(range(ranks))  # ZeRO-1: each rank owns (updates) exactly one depth


def test_amdp_p8_mirror_groups():
    layout = amdp_layout(8)
    for rank in range(8):
        depths = {layout.depth(stage) for stage in layout.rank_stages(rank)}
        assert depths == ({0, 3, 4, 7} if rank in FIRST_LAST_RANKS else {1, 2, 5, 6})


def test_amdp_p8_slot_orders_equal_the_appendix():
    layout = amdp_layout(8)
    for rank, (forward, backward) in APPENDIX_SLOT_ORDERS.items():
        assert slot_orders(layout, rank) == (
            [int(k) for k in forward.split()],
            [int(k) for k in backward.split()],
        )


@pytest.mark.parametrize("microbatches", [8, 16, 24])  # 1, 2 and 3 rounds per iteration
def test_amdp_p8_order_equals_the_appendix(microbatches):
    steps = 3
    schedule = generate_amdp(8, microbatches, steps)
    rounds, per_step = steps * microbatches // 8, microbatches // 8
    for rank, actions in enumerate(schedule.actions):
        tokens = [{Kind.F: "F", Kind.B: "B", Kind.OPT: "U"}.get(a.kind) for a in actions]
        expected = []
        for rnd in range(rounds):
            round_tokens = ROUND_PATTERN[rank in FIRST_LAST_RANKS].split()
            if rnd == 0 or rnd % per_step:
                round_tokens.remove("U")
            if rnd == 0:
                round_tokens.remove("B")  # the very first round starts with just F F
            expected += round_tokens
        expected += ["B", "U"]  # the run ends with a last backward and update
        assert [t for t in tokens if t] == expected, f"rank {rank}"
        # the forwards and backwards walk the authors' slot orders round after round
        for kind, order in zip((Kind.F, Kind.B), APPENDIX_SLOT_ORDERS[rank], strict=True):
            slots = [divmod(global_microbatch(a, microbatches), 8) for a in actions if a.kind is kind]
            assert slots == [(rnd, int(k)) for rnd in range(rounds) for k in order.split()]


def stale_backwards(actions: tuple[Action, ...]) -> dict[int, int]:
    """Backwards of step i that ran, with their forward, before the update of step i-1, by step.

    The authors' order has one per update on ranks 0, 3, 4, 7: the last-stage backward that a round
    runs before its update (`F F B F F F F F B F U`); its gradient joins that update, the one of step i-1,
    at the version it replaces (schedules.semantics; docs/amdp.md).
    """
    counts: dict[int, int] = {}
    for action in actions:
        if action.kind is Kind.B and action.version != action.step:
            assert action.version == action.step - 1
            counts[action.step] = counts.get(action.step, 0) + 1
    return counts


def mismatches_per_update(schedule: Schedule, rank: int) -> dict[int, int]:
    """Microbatches on `rank` whose forward and backward read different versions, by backward version."""
    forward = {(a.stage, a.step, a.microbatch): a.version for a in schedule.actions[rank] if a.kind is Kind.F}
    counts: dict[int, int] = {}
    for action in schedule.actions[rank]:
        if action.kind is Kind.B and action.version != forward[action.stage, action.step, action.microbatch]:
            assert action.version == forward[action.stage, action.step, action.microbatch] + 1
            counts[action.version] = counts.get(action.version, 0) + 1
    return counts


@pytest.mark.parametrize("microbatches", [16, 24, 32])
def test_amdp_p8_mismatches_per_rank_per_update_whatever_m(microbatches):
    schedule = build("amdp", 8, microbatches, steps=3)
    for rank in range(8):
        expected = 7 if rank in FIRST_LAST_RANKS else 8
        assert mismatches_per_update(schedule, rank) == {1: expected, 2: expected}  # none at the last one
        assert stale_backwards(schedule.actions[rank]) == ({1: 1, 2: 1} if expected == 7 else {})


def peak_in_flight(actions: tuple[Action, ...]) -> int:
    in_flight, peak = set(), 0
    for action in actions:
        if action.kind is Kind.F:
            in_flight.add((action.stage, action.step, action.microbatch))
            peak = max(peak, len(in_flight))
        elif action.kind is Kind.B:
            in_flight.remove((action.stage, action.step, action.microbatch))
    return peak


def test_amdp_p8_in_flight_counts():
    schedule = generate_amdp(8, 16, 3)
    assert [peak_in_flight(actions) for actions in schedule.actions] == [7, 8, 8, 7, 7, 8, 8, 7]


@pytest.mark.parametrize("ranks", [2, 4, 6, 8, 10, 12])
def test_amdp_properties_for_any_even_p(ranks):
    # docs/amdp.md: about P microbatches in flight per device; a first stage admits at most two microbatches
    # before their backward; about P one-step mismatches per device per update; delay 0 otherwise.
    microbatches, steps = 2 * ranks, 3
    schedule = build("amdp", ranks, microbatches, steps)
    layout = schedule.layout
    for rank, actions in enumerate(schedule.actions):
        assert abs(peak_in_flight(actions) - ranks) <= 1
        counts = mismatches_per_update(schedule, rank)
        assert sorted(counts) == [1, 2] and all(abs(n - ranks) <= 1 for n in counts.values())
        assert all(n <= 1 for n in stale_backwards(actions).values())
        for index, action in enumerate(actions):
            if action.kind in (Kind.F, Kind.B):  # step i runs at W(i), its first round partly at W(i-1)
                assert action.version in (action.step - 1, action.step)
            elif action.kind in (Kind.OPT, Kind.RECV_W, Kind.SEND_W):
                assert action.version == action.step + 1
            if action.kind in (Kind.OPT, Kind.SEND_G):  # the step's gradient is complete
                later = actions[index:]
                assert not any(
                    a.kind is Kind.B and a.stage == action.stage and a.step == action.step for a in later
                )
    for pipeline in range(layout.pipelines):
        first = pipeline * ranks
        kinds = "".join(str(a.kind) for a in schedule.actions[layout.placement[first]] if a.stage == first)
        assert "FFF" not in kinds.replace("OPT", "")


@pytest.mark.parametrize(
    "ranks, microbatches, message",
    [(3, 6, "even number of stages P"), (0, 4, "even number of stages P"), (4, 6, "multiple of stages P")],
)
def test_amdp_rejects_sizes_it_cannot_schedule(ranks, microbatches, message):
    with pytest.raises(ScheduleError, match=message):
        generate_amdp(ranks, microbatches)


# ---------------------------------------------------------------------------------------------------------
# Completeness and deadlock freedom over the grid P in 2..8, m in P..3P, steps 1..3.

GRID = [(name, ranks) for name in ("pipedream", "2bw", "amdp") for ranks in range(2, 9)]


@pytest.mark.parametrize("name, ranks", [(n, p) for n, p in GRID if n != "amdp" or p % 2 == 0])
def test_complete_and_deadlock_free(name, ranks):
    for microbatches in range(ranks, 3 * ranks + 1):
        if name == "amdp" and microbatches % ranks:
            continue
        for steps in (1, 2, 3):
            schedule = build(name, ranks, microbatches, steps)
            compute = [
                (a.stage, a.kind, a.step, a.microbatch)
                for _, a in schedule.all_actions()
                if a.kind in (Kind.F, Kind.B)
            ]
            assert len(compute) == len(set(compute)) == 2 * ranks * steps * microbatches
            for rank, action in schedule.all_actions():
                assert schedule.layout.placement[action.stage] == rank
            assert run_in_order(schedule) >= max(len(actions) for actions in schedule.actions)

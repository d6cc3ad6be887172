"""schedules.semantics: which update each weight gradient joins, and what follows (delay, update sizes).

.venv/bin/pytest tests/schedules/test_semantics.py -q

The rule (docs/amdp.md): a weight gradient joins the first update of its stage that its rank runs
after it (OPT on the owner, RECV_W on an AMDP replica); the update sums whatever joined it.
"""

from __future__ import annotations

import pytest

from schedules import SCHEDULES, build
from schedules.ir import Kind, Schedule, Versioning, linear_layout, parse_action
from schedules.semantics import contributions, loss_scale, stage_delays, update_sizes


def one_stage(row: str, versioning: Versioning, steps: int) -> Schedule:
    return Schedule(
        name="hand",
        layout=linear_layout(1),
        microbatches=1,
        steps=steps,
        versioning=versioning,
        actions=(tuple(parse_action(text) for text in row.split()),),
    )


def test_a_gradient_joins_the_next_update_of_its_stage_on_its_rank() -> None:
    # 2BW by hand: B of step 1 reads v0 and joins the OPT after it (writes v2): delay 1. The trailing B
    # has no update after it: never applied (version None, no delay).
    schedule = one_stage(
        "0F0@v0 0B0@v0 0OPT@v1 0F0@s1v0 0B0@s1v0 0OPT@s1v2 0B0@s2v1", Versioning.DOUBLE_BUFFER, 3
    )
    joined = [(str(c.action), c.version, c.delay) for c in contributions(schedule)]
    assert joined == [("0B0@v0", 1, 0), ("0B0@s1v0", 2, 1), ("0B0@s2v1", None, None)]
    assert stage_delays(schedule) == [1]
    assert update_sizes(schedule) == {0: {1: 1, 2: 1}}


def test_amdp_p4_rank0_the_last_stage_backward_of_step_1_joins_update_to_v1() -> None:
    # Rank 0 holds stage 0 (owner of depth 0) and stage 7 (depth 3 of pipeline 1, owned by stage 3).
    # 7B1@s1v0 runs before the update block: it joins the same update as step 0's 7B1 and 7B3.
    schedule = build("amdp", 4, 4, steps=2)
    joined = {str(c.action): (c.applier, c.version) for c in contributions(schedule) if c.rank == 0}
    assert joined["7B1@s1v0"] == joined["7B3@v0"] == joined["7B1@v0"] == (3, 1)
    assert joined["7B3@s1v1"] == (3, 2)
    assert joined["0B2@v0"] == (0, 1) and joined["0B0@s1v1"] == (0, 2)


@pytest.mark.parametrize(("ranks", "microbatches"), [(4, 4), (4, 8), (8, 8), (8, 16)])
def test_amdp_updates_of_the_last_depth_sum_m_plus_n_then_m_then_m_minus_n(ranks, microbatches) -> None:
    # N = P/2 last-stage backwards of the next step run before each update (ranks 0 and 3 at P = 4,
    # 0, 3, 4, 7 at P = 8) and join it, so the first update gains N, the last lacks N, the others hold m.
    steps, pipelines = 4, ranks // 2
    sizes = update_sizes(build("amdp", ranks, microbatches, steps))
    m = microbatches
    assert sizes[ranks - 1] == {1: m + pipelines, 2: m, 3: m, 4: m - pipelines}
    assert all(sizes[depth] == dict.fromkeys(range(1, steps + 1), m) for depth in range(ranks - 1))


@pytest.mark.parametrize("ranks", [2, 4, 6, 8, 10, 12])
def test_amdp_every_gradient_meets_the_weights_it_read_and_replicas_report_alike(ranks) -> None:
    schedule = build("amdp", ranks, 2 * ranks, steps=3)
    layout = schedule.layout
    for c in contributions(schedule):
        assert c.version == c.action.version + 1 and c.applier == layout.depth(c.action.stage)
    assert stage_delays(schedule) == [0] * schedule.num_stages
    total = sum(n for per_update in update_sizes(schedule).values() for n in per_update.values())
    assert total == ranks * 2 * ranks * 3  # every microbatch's gradient of every depth, exactly once


@pytest.mark.parametrize("ranks", [2, 4, 6, 8])
def test_amdp_replicas_run_no_backward_between_handing_over_and_receiving_weights(ranks) -> None:
    """What lets the rule use RECV_W for a replica's update: its SEND_G (where the executor empties the
    buffer) and its RECV_W bracket no weight gradient of the stage."""
    for rank, actions in enumerate(build("amdp", ranks, ranks, steps=3).actions):
        open_stages: set[int] = set()
        for action in actions:
            if action.kind is Kind.SEND_G:
                open_stages.add(action.stage)
            elif action.kind is Kind.RECV_W:
                open_stages.discard(action.stage)
            elif action.kind in (Kind.B, Kind.W):
                assert action.stage not in open_stages, (rank, str(action))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_delays_equal_the_closed_forms(name) -> None:
    # docs/schedules.md: 0 for flushes and AMDP, P-1-s for PipeDream, 1 for 2BW (once steady: steps >= 2).
    ranks = 4
    schedule = build(name, ranks, 8, steps=3, chunks=SCHEDULES[name].default_chunks)
    expected = {"pipedream": [ranks - 1 - s for s in range(ranks)], "2bw": [1] * ranks}
    assert stage_delays(schedule) == expected.get(name, [0] * schedule.num_stages)


def test_loss_scale_is_one_over_m_except_per_microbatch_updates() -> None:
    assert loss_scale(build("amdp", 4, 8)) == 1 / 8  # the authors divide every loss by m
    assert loss_scale(build("1f1b", 4, 8)) == 1 / 8
    assert loss_scale(build("pipedream", 4, 8)) == 1.0

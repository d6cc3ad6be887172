"""The dry run, the analytics and the time grid on small schedules whose numbers are worked out by hand.

.venv/bin/pytest tests/schedules/test_analytics.py -q
"""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction

import pytest

from schedules import Costs, analyze, build, dry_run, render_grid, validate
from schedules.costs import action_cost
from schedules.ir import Action, Kind, Schedule, ScheduleError, Versioning, linear_layout, parse_action


def schedule_of(
    rows: list[str], *, versioning: Versioning = Versioning.FLUSH, steps: int = 1, m: int = 1
) -> Schedule:
    """A one-pipeline schedule (stage s on rank s) written in text form, one row per rank."""
    return Schedule(
        name="hand",
        layout=linear_layout(len(rows)),
        microbatches=m,
        steps=steps,
        versioning=versioning,
        actions=tuple(tuple(parse_action(t) for t in row.split()) for row in rows),
    )


def needs(module: str) -> None:
    if importlib.util.find_spec(f"schedules.{module}") is None:
        pytest.skip(f"schedules/{module}.py does not exist yet")


# --- costs -------------------------------------------------------------------------------------------


def test_split_backward_defaults_to_half_of_b() -> None:
    schedule = build("zb-h1", 2, 2)
    assert action_cost(Costs(b=3), schedule, Action(0, Kind.I, 0)) == 1.5
    assert action_cost(Costs(b=3, i=2, w=1), schedule, Action(0, Kind.W, 0)) == 1
    assert action_cost(Costs(comm=0.25), schedule, Action(0, Kind.SEND_F, 0)) == 0.25


def test_interleaved_chunks_cost_one_vth() -> None:
    schedule = build("interleaved", 2, 2, chunks=4)
    assert action_cost(Costs(), schedule, Action(0, Kind.F, 0)) == 0.25
    assert action_cost(Costs(comm=1), schedule, Action(0, Kind.SEND_F, 0)) == 1  # comm is not per chunk


# --- dry run -----------------------------------------------------------------------------------------


def test_dry_run_1f1b_by_hand() -> None:
    # P = 2, m = 2:  rank 0  F0[0,1] F1[1,2] B0[4,6] B1[7,9]   (B0 waits for 1B0, B1 for 1B1)
    #                rank 1  F0[1,2] B0[2,4] F1[4,5] B1[5,7]
    timeline = dry_run(build("1f1b", 2, 2, lowered=False))
    assert timeline.start == ((0, 1, 4, 7), (1, 2, 4, 5))
    assert timeline.end == ((1, 2, 6, 9), (2, 4, 5, 7))
    assert timeline.spans(1) == [(1, 2), (2, 4), (4, 5), (5, 7)]
    assert timeline.makespan == 9


def test_dry_run_transfer_costs_send_plus_receive() -> None:
    # P = 2, m = 1, comm = 1: 0F0[0,1] 0SEND_F0[1,2] | 1RECV_F0[2,3] 1F0[3,4] 1B0[4,6] 1SEND_B0[6,7]
    #                         0RECV_B0[7,8] 0B0[8,10]; OPTs cost nothing.
    timeline = dry_run(build("1f1b", 2, 1), Costs(comm=1))
    assert timeline.end[0] == (1, 2, 8, 10, 10)
    assert timeline.end[1] == (3, 4, 6, 7, 7)
    assert timeline.makespan == 10


def test_dry_run_optimizer_cost_extends_the_step() -> None:
    assert dry_run(build("gpipe", 2, 1), Costs(opt=5)).makespan == 6 + 5


def test_dry_run_names_the_stuck_actions() -> None:
    # Rank 0 waits at 0B0 for 1B0, which rank 1 runs only after 1F1, which waits for 0F1 on rank 0.
    stuck = schedule_of(["0F0 0B0 0F1 0B1", "1F1 1F0 1B0 1B1"], m=2)
    with pytest.raises(
        ScheduleError, match="deadlock: rank 0 at 0B0 waits for 1B0; rank 1 at 1F1 waits for 0F1"
    ):
        dry_run(stuck)


def test_dry_run_names_a_dependency_nobody_runs() -> None:
    with pytest.raises(ScheduleError, match="1F0 waits for 0F0, which no rank runs"):
        dry_run(schedule_of(["", "1F0 1B0"]))


def test_dry_run_is_exact_with_fractions() -> None:
    # v = 3 makes every chunk cost a third; Fractions keep the makespan exact (3m + 3(P-1)/v).
    timeline = dry_run(build("interleaved", 4, 8, chunks=3), Costs(f=Fraction(1), b=Fraction(2)))
    assert timeline.makespan == Fraction(24) + Fraction(9, 3)


def test_dry_run_scales_to_long_schedules() -> None:
    # A few hundred thousand actions, still the closed form (the benchmark times a million).
    ranks, microbatches = 8, 4096
    assert dry_run(build("1f1b", ranks, microbatches)).makespan == 3 * (microbatches + ranks - 1)


# --- analytics ---------------------------------------------------------------------------------------

KEYS = {
    "schedule",
    "stages",
    "microbatches",
    "steps",
    "chunks",
    "makespan",
    "step_time",
    "bubble_fraction",
    "bubble_ratio",
    "peak_activations",
    "peak_activations_per_rank",
    "weight_versions",
    "delay",
    "mismatches",
    "utilization",
}


def test_to_dict_is_json_ready_with_every_key() -> None:
    result = analyze(build("interleaved", 4, 8, chunks=2)).to_dict()
    assert set(result) == KEYS
    assert json.loads(json.dumps(result)) == result
    assert result["peak_activations_per_rank"][0] == 5.5
    assert result["stages"] == 8 and result["chunks"] == 2
    assert isinstance(result["makespan"], float)  # 28.5


def test_1f1b_analytics_by_hand() -> None:
    result = analyze(build("1f1b", 2, 2))
    assert result.makespan == 9
    assert result.bubble_fraction == 1 - 12 / 18  # busy 2 x (1 + 2) per rank out of 2 x 9
    assert result.bubble_ratio == 18 / 12 - 1
    assert result.peak_activations == [2, 1]
    assert result.utilization == [6 / 9, 6 / 9]
    assert (result.weight_versions, result.delay, result.mismatches) == ([1, 1], [0, 0], [0, 0])


def test_zb_h1_frees_activations_at_i() -> None:
    # Stage 1 runs "1F0 1I0 1F1 1I1 1W0 ...": its Ws are deferred, but each I frees the microbatch's
    # activations, so at most one is in flight there, as in 1F1B (a count until W would give 2).
    assert analyze(build("zb-h1", 2, 3)).peak_activations == [2, 1]


def test_flushing_steps_repeat_the_single_step() -> None:
    one, three = analyze(build("gpipe", 4, 8)), analyze(build("gpipe", 4, 8, steps=3))
    assert three.makespan == 3 * one.makespan
    assert three.step_time == one.makespan == 33
    assert three.bubble_fraction == one.bubble_fraction


def test_double_buffer_by_hand() -> None:
    # One stage, m = 1, 3 steps: step k reads W(k-1), so after OPT writes v1 the next step still reads
    # v0 (2 versions held), and the update of step 1 (writes v2) applies a gradient taken at v0 (delay 1).
    schedule = schedule_of(
        ["0F0@v0 0B0@v0 0OPT@v1 0F0@s1v0 0B0@s1v0 0OPT@s1v2 0F0@s2v1 0B0@s2v1 0OPT@s2v3"],
        versioning=Versioning.DOUBLE_BUFFER,
        steps=3,
    )
    validate(schedule)
    result = analyze(schedule)
    assert (result.weight_versions, result.delay, result.mismatches) == ([2], [1], [0])


def test_current_versioning_counts_mismatches_and_delay() -> None:
    # No stashing (CURRENT): the step-0 update lands between F0 and B0 of step 1 on stage 0.
    schedule = schedule_of(
        [
            "0F0@v0 0B0@v0 0F0@s1v0 0OPT@v1 0B0@s1v1 0OPT@s1v2",
            "1F0@v0 1B0@v0 1OPT@v1 1F0@s1v1 1B0@s1v1 1OPT@s1v2",
        ],
        versioning=Versioning.CURRENT,
        steps=2,
    )
    validate(schedule)
    result = analyze(schedule)
    assert result.mismatches == [1, 0]  # microbatch 0 of step 1 on stage 0: F at v0, B at v1
    assert result.delay == [0, 0]  # each update applies gradients taken at the version it replaces
    assert result.weight_versions == [1, 1]  # nobody reads an old version


def test_pipedream_closed_forms() -> None:
    needs("pipedream")
    ranks = 4
    result = analyze(build("pipedream", ranks, 8, steps=3))
    assert result.delay == [ranks - 1 - s for s in range(ranks)]
    assert result.weight_versions == [ranks - s for s in range(ranks)]
    assert result.peak_activations == [ranks - s for s in range(ranks)]
    assert result.bubble_fraction == 0 and result.step_time == 3 * 8
    assert result.mismatches == [0] * ranks


def test_2bw_closed_forms() -> None:
    needs("pipedream_2bw")
    result = analyze(build("2bw", 8, 16, steps=3))
    assert result.delay == [1] * 8
    assert result.weight_versions == [2] * 8
    assert result.bubble_fraction == 0
    assert result.mismatches == [0] * 8


# --- grid --------------------------------------------------------------------------------------------


def test_render_grid_by_hand() -> None:
    grid = render_grid(build("1f1b", 2, 2))
    assert grid.splitlines() == [
        "rank 0  F0F1....B0B0..B1B1",
        "rank 1  ..F0B0B0F1B1B1....",
        "makespan 9; one column = 1 time unit; '.' idle",
    ]


def test_render_grid_shows_split_backwards_and_colour() -> None:
    plain = render_grid(build("zb-h1", 2, 3))
    assert "I0" in plain and "W2" in plain and "\x1b[" not in plain
    coloured = render_grid(build("zb-h1", 2, 3), color=True)
    assert "\x1b[" in coloured and "W2" in coloured


def test_render_grid_half_units_for_two_chunks() -> None:
    grid = render_grid(build("interleaved", 4, 8, chunks=2))
    assert grid.splitlines()[-1] == "makespan 28.5; one column = 0.5 time units; '.' idle"
    assert len(grid.splitlines()[0]) == len("rank 0  ") + 2 * 57  # 57 half-units, 2 characters each


def test_render_grid_stays_within_width_for_sixteen_ranks() -> None:
    grid = render_grid(build("1f1b", 16, 64), width=120)
    lines = grid.splitlines()
    assert len(lines) == 17
    assert all(len(line) <= 120 for line in lines[:-1])
    assert set("".join(line[9:] for line in lines[:-1])) <= set("FB.")

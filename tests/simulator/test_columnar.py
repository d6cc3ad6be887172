"""The large-scale path on columns gives the IR path's answers, step by step, to the bit.

.venv/bin/pytest tests/simulator/test_columnar.py -q

simulator/columnar/ re-does, with whole-array operations, what schedules/ and simulator/ do action by
action: the closed-form generators and the lowering passes, validate(), make_plan, the SimPy engine's
times, the memory model and the metrics. Each is compared with its original on every schedule, under the
cost models of the trace-identity test (jitter, host times, warm-up, empirical and link jitter, blocking
sends), and validate()'s table of broken schedules.
"""

from __future__ import annotations

import numpy as np
import pytest

from schedules import SCHEDULES, build, validate
from schedules.ir import ScheduleError, Versioning
from simulator import simulate
from simulator.columnar import columns_of, simulate_at_scale, simulate_columns
from simulator.columnar.check import check_columns
from simulator.columnar.generate import compute_columns, has_closed_form, lowered_columns
from simulator.columnar.plan import plan_columns
from simulator.engine import run_plan
from simulator.plan import SimulationError, make_plan
from tests.schedules.test_validate import BROKEN, LOWERED_0, LOWERED_1, edited, one_f_one_b, rows
from tests.simulator.test_trace_identity import COSTS

CLOSED_FORMS = [name for name in SCHEDULES if has_closed_form(name)]
SIZES = [(1, 1, 1), (1, 3, 2), (2, 2, 1), (3, 5, 2), (4, 8, 3), (5, 4, 2), (8, 8, 1)]
"""(P, m, steps): one stage, fewer microbatches than stages, odd sizes, several steps."""


def flat(per_rank: list[list]) -> list:
    return [value for values in per_rank for value in values]


@pytest.mark.parametrize("name", CLOSED_FORMS)
def test_closed_forms_and_their_lowering_equal_the_generators_and_passes(name: str) -> None:
    compared = 0
    for ranks, microbatches, steps in SIZES:
        try:
            expected = build(name, ranks, microbatches, steps=steps, lowered=False)
        except ScheduleError:
            continue  # a size the schedule does not take (2BW with m < P)
        assert compute_columns(name, ranks, microbatches, steps).to_schedule() == expected
        lowered = lowered_columns(name, ranks, microbatches, steps).to_schedule()
        assert lowered == build(name, ranks, microbatches, steps=steps)
        compared += 1
    assert compared >= 5


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_step_gives_the_ir_paths_numbers(name: str) -> None:
    for ranks, microbatches, steps in [(2, 4, 1), (4, 8, 3)]:
        schedule = build(name, ranks, microbatches, steps=steps)
        columns = columns_of(schedule)
        assert columns.to_schedule() == schedule
        for costs in COSTS.values():
            plan = make_plan(schedule, costs)
            assert plan_columns(columns, costs).durations.tolist() == flat(plan.durations)
            reference = simulate(schedule, costs)
            result = simulate_columns(columns, costs)
            timeline = run_plan(plan)  # equal to the event-per-action reference (test_engine.py)
            assert result.starts.tolist() == flat(timeline.starts)
            assert result.ends.tolist() == flat(timeline.ends)
            assert result.memory.tolist() == flat(reference.memory)
            assert result.metrics == reference.metrics()


def test_simulate_at_scale_builds_the_same_schedule_either_way() -> None:
    costs = COSTS["sized"]
    for name, ranks, microbatches, steps in [("2bw", 16, 48, 3), ("zb-h1", 12, 40, 2), ("amdp", 4, 8, 2)]:
        expected = simulate(build(name, ranks, microbatches, steps=steps), costs).metrics()
        assert simulate_at_scale(name, ranks, microbatches, steps=steps, costs=costs).metrics == expected


VERSION_CASES = [
    # (why, schedule, edit of one rank's row: old text -> new text, versioning override)
    ("stash: a backward rereads its forward's version", ("pipedream", 2, 2, 2), (0, "0B1@s1v2", "0B1@s1v92")),
    ("double buffer: step k reads W(k-1)", ("2bw", 2, 2, 3), (1, "1F0@s2v1", "1F0@s2v2")),
]


def broken_schedules():
    for why, lowered, broken, *_ in BROKEN:
        yield why, edited(one_f_one_b(lowered), broken)
    for why, (name, ranks, microbatches, steps), (rank, old, new) in VERSION_CASES:
        text = rows(build(name, ranks, microbatches, steps=steps))
        text[rank] = text[rank].replace(old, new, 1)
        yield why, edited(build(name, ranks, microbatches, steps=steps), text)
    moved = LOWERED_0.replace(" 0OPT@v1", "").replace("0B0@v0 ", "0B0@v0 0OPT@v1 ")
    yield "current: no stashing", edited(one_f_one_b(True), [moved, LOWERED_1], Versioning.CURRENT)


@pytest.mark.parametrize(
    ("why", "schedule"), list(broken_schedules()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_check_names_the_first_problem_as_validate_does(why: str, schedule) -> None:
    with pytest.raises(ScheduleError) as expected:
        validate(schedule)
    columns = columns_of(schedule)
    if str(expected.value).startswith("deadlock"):  # the engine's to find
        check_columns(columns, small=0)
        if any(a.kind.value.startswith("SEND") for actions in schedule.actions for a in actions):
            with pytest.raises(SimulationError, match="deadlock") as stuck:
                simulate_columns(columns, COSTS["unit"])
            with pytest.raises(SimulationError) as engine:
                simulate(schedule, COSTS["unit"])
            assert str(stuck.value) == str(engine.value)
        return
    with pytest.raises(ScheduleError) as small:
        check_columns(columns)
    assert str(small.value) == str(expected.value)  # validate()'s message, picture and all
    with pytest.raises(ScheduleError) as large:
        check_columns(columns, small=0)
    assert str(large.value) == str(expected.value).splitlines()[0]  # the headline alone


def test_every_schedule_passes_the_check_lowered_or_not() -> None:
    for name in SCHEDULES:
        for ranks, microbatches, steps in [(2, 4, 1), (4, 8, 3), (6, 12, 2)]:
            check_columns(columns_of(build(name, ranks, microbatches, steps=steps)), small=0)
            check_columns(columns_of(build(name, ranks, microbatches, steps=steps, lowered=False)), small=0)


def test_a_receive_without_its_send_is_named_like_the_ir_plan() -> None:
    schedule = edited(one_f_one_b(True), [LOWERED_0.replace(" 0SEND_F1", ""), LOWERED_1])
    with pytest.raises(SimulationError) as expected:
        make_plan(schedule, COSTS["unit"])
    with pytest.raises(SimulationError) as found:
        plan_columns(columns_of(schedule), COSTS["unit"])
    assert str(found.value) == str(expected.value)


def test_columns_are_compact() -> None:
    columns = lowered_columns("1f1b", 8, 64)
    per_action = sum(getattr(columns, name).itemsize for name in ("kind", "stage", "microbatch", "step"))
    per_action += columns.version.itemsize + columns.peer.itemsize
    assert per_action <= 21
    assert np.array_equal(np.diff(columns.offsets), [len(a) for a in build("1f1b", 8, 64).actions])

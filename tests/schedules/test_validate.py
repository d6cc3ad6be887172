"""validate(): each failure kind is caught, named in one headline, and marked in the printed grid.

.venv/bin/pytest tests/schedules/test_validate.py -q

Every broken schedule is a valid one with a few actions edited in the IR's text form.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from schedules import build, validate
from schedules.grid import render_order
from schedules.ir import Schedule, ScheduleError, Versioning, parse_action


def edited(schedule: Schedule, rows: list[str], versioning: Versioning | None = None) -> Schedule:
    """The schedule with each rank's actions replaced by a space-separated text row."""
    actions = [[parse_action(text) for text in row.split()] for row in rows]
    changed = schedule.with_actions(actions)
    return changed if versioning is None else replace(changed, versioning=versioning)


def rows(schedule: Schedule) -> list[str]:
    return [" ".join(str(a) for a in actions) for actions in schedule.actions]


def one_f_one_b(lowered: bool = False) -> Schedule:
    return build("1f1b", 2, 2, lowered=lowered)


# Valid starting points, P = 2, m = 2:
#   compute-only  "0F0 0F1 0B0 0B1" / "1F0 1B0 1F1 1B1"
#   lowered       "0F0@v0 0SEND_F0 0F1@v0 0SEND_F1 0RECV_B0 0B0@v0 0RECV_B1 0B1@v0 0OPT@v1"
#                 "1RECV_F0 1F0@v0 1B0@v0 1SEND_B0 1RECV_F1 1F1@v0 1B1@v0 1SEND_B1 1OPT@v1"
LOWERED_0 = "0F0@v0 0SEND_F0 0F1@v0 0SEND_F1 0RECV_B0 0B0@v0 0RECV_B1 0B1@v0 0OPT@v1"
LOWERED_1 = "1RECV_F0 1F0@v0 1B0@v0 1SEND_B0 1RECV_F1 1F1@v0 1B1@v0 1SEND_B1 1OPT@v1"

BROKEN = [
    # (why, lowered?, rows, headline fragment, marked cell)
    (
        "deadlock: rank 1 wants microbatch 1 first, rank 0 wants 1B0 before it sends F1",
        False,
        ["0F0 0B0 0F1 0B1", "1F1 1F0 1B0 1B1"],
        "deadlock",
        None,  # some action of the cycle; checked below
    ),
    (
        "deadlock through comms: rank 0 waits for a gradient before sending the activation",
        True,
        [
            LOWERED_0.replace("0F0@v0 0SEND_F0", "0F0@v0 0RECV_B0 0SEND_F0", 1).replace(
                "0SEND_F1 0RECV_B0", "0SEND_F1", 1
            ),
            LOWERED_1,
        ],
        "deadlock",
        None,
    ),
    (
        "a receive with no matching send",
        True,
        [LOWERED_0.replace(" 0SEND_F1", ""), LOWERED_1],
        "1RECV_F1 on rank 1 has no matching SEND_F",
        "1RECV_F1",
    ),
    (
        "a send with no matching receive",
        True,
        [LOWERED_0, LOWERED_1.replace(" 1RECV_F1", "")],
        "0SEND_F1 on rank 0 has no matching RECV_F",
        "0SEND_F1",
    ),
    (
        "a missing backward",
        False,
        ["0F0 0F1 0B0 0B1", "1F0 1B0 1F1"],
        "missing backward B (or I and W) for 1F1",
        "1F1",
    ),
    (
        "a missing forward",
        False,
        ["0F0 0B0 0B1", "1F0 1B0 1F1 1B1"],
        "missing forward 0F1",
        "0B1",
    ),
    (
        "a split backward without its W",
        False,
        ["0F0 0F1 0B0 0B1", "1F0 1I0 1W0 1F1 1I1"],
        "missing backward W for 1F1",
        "1F1",
    ),
    (
        "a microbatch with both a full and a split backward",
        False,
        ["0F0 0F1 0B0 0I1 0W1 0B1", "1F0 1B0 1F1 1B1"],
        "0F1: stage 0 runs both a full backward and a split one",
        "0F1",
    ),
    (
        "a microbatch outside 0..m-1",
        False,
        ["0F0 0F1 0B0 0B1 0F2", "1F0 1B0 1F1 1B1"],
        "0F2 on rank 0 is not part of this schedule's work",
        "0F2",
    ),
    (
        "a duplicate",
        False,
        ["0F0 0F1 0F1 0B0 0B1", "1F0 1B0 1F1 1B1"],
        "0F1 on rank 0 is a duplicate",
        "0F1",
    ),
    (
        "an action on a rank that does not hold its stage",
        False,
        ["0F0 1F0 0F1 0B0 0B1", "1B0 1F1 1B1"],
        "1F0 runs on rank 0, but stage 1 lives on rank 1",
        "1F0",
    ),
    (
        "a backward before its forward on the same rank",
        False,
        ["0F0 0B1 0F1 0B0", "1F0 1B0 1F1 1B1"],
        "0B1 on rank 0 comes before its forward 0F1",
        "0B1",
    ),
    (
        "a W before its I",
        False,
        ["0F0 0F1 0I0 0W1 0W0 0I1", "1F0 1B0 1F1 1B1"],
        "0W1 on rank 0 comes before its input backward 0I1",
        "0W1",
    ),
    (
        "FLUSH: a forward reading a version other than its step",
        True,
        [LOWERED_0.replace("0F1@v0", "0F1@v1"), LOWERED_1],
        "0F1@v1 on rank 0 has version 1, but the flush rule gives 0",
        "0F1@v1",
    ),
    (
        "OPT versions must increase by one",
        True,
        [LOWERED_0, LOWERED_1.replace("1OPT@v1", "1OPT@v2")],
        "1OPT@v2 on rank 1 has version 2, but the flush rule gives 1",
        "1OPT@v2",
    ),
]


@pytest.mark.parametrize(("why", "lowered", "broken", "headline", "cell"), BROKEN, ids=[b[0] for b in BROKEN])
def test_validate_catches(
    why: str, lowered: bool, broken: list[str], headline: str, cell: str | None
) -> None:
    schedule = edited(one_f_one_b(lowered), broken)
    with pytest.raises(ScheduleError) as error:
        validate(schedule)
    first, *grid = str(error.value).splitlines()
    assert headline in first
    assert any(line.startswith("rank 0") for line in grid) and any(line.startswith("rank 1") for line in grid)
    marked = [text for line in grid for text in _marked(line)]
    assert len(marked) == 1
    if cell is not None:
        assert marked == [cell]
    else:
        assert marked[0] in first  # the marked action is one of the cycle's


def _marked(line: str) -> list[str]:
    return [part.split("<<")[0] for part in line.split(">>")[1:]]


def test_the_unedited_schedules_are_valid() -> None:
    validate(one_f_one_b())
    validate(one_f_one_b(lowered=True))
    assert rows(one_f_one_b(lowered=True)) == [LOWERED_0, LOWERED_1]


def test_stash_backward_must_reread_its_forward_version() -> None:
    # PipeDream (weight stashing): a backward that reads the newest version instead of its stash.
    schedule = build("pipedream", 2, 2, steps=2)
    text = rows(schedule)
    backward = next(t for t in text[0].split() if t.startswith("0B1@s1"))
    wrong = backward.replace("v", "v9") if "v" in backward else backward
    broken = edited(schedule, [text[0].replace(backward, wrong, 1), text[1]])
    with pytest.raises(ScheduleError, match="stash rule") as error:
        validate(broken)
    assert f">>{wrong}<<" in str(error.value)


def test_double_buffer_reads_the_previous_step() -> None:
    # PipeDream-2BW: step k reads W(k-1); a step-2 forward reading W(2) breaks the rule.
    schedule = build("2bw", 2, 2, steps=3)
    text = rows(schedule)
    forward = next(t for t in text[1].split() if t.startswith("1F0@s2"))
    broken = edited(schedule, [text[0], text[1].replace(forward, "1F0@s2v2", 1)])
    with pytest.raises(ScheduleError, match="double_buffer rule gives 1"):
        validate(broken)


def test_current_versioning_reads_what_the_stage_holds() -> None:
    # AMDP-style (CURRENT): an update between F1 and B1 is fine if B1 reads the new version...
    moved = LOWERED_0.replace(" 0OPT@v1", "").replace("0B0@v0 ", "0B0@v0 0OPT@v1 ")
    current = edited(one_f_one_b(True), [moved.replace("0B1@v0", "0B1@v1"), LOWERED_1], Versioning.CURRENT)
    validate(current)
    # ...and wrong if it still reads the old one (that would be stashing).
    stale = edited(one_f_one_b(True), [moved, LOWERED_1], Versioning.CURRENT)
    with pytest.raises(ScheduleError, match="0B1@v0 on rank 0 has version 0, but the current rule gives 1"):
        validate(stale)


def test_big_schedule_shows_a_window_around_the_bad_cell() -> None:
    schedule = build("1f1b", 16, 64)
    text = rows(schedule)
    victim = text[9].split()[300]
    broken = edited(schedule, [*text[:9], text[9].replace(f" {victim}", "", 1), *text[10:]])
    with pytest.raises(ScheduleError) as error:
        validate(broken)
    message = str(error.value)
    lines = message.splitlines()
    assert len(lines) <= 1 + 1 + 16 + 1  # headline, position header, 16 ranks, window note
    assert max(len(line) for line in lines[1:]) <= 150
    assert "positions" in lines[-1] and "of" in lines[-1]
    assert message.count(">>") == 1


def test_render_order_windows_ranks_beyond_sixteen() -> None:
    schedule = build("gpipe", 24, 24, lowered=False)
    grid = render_order(schedule, mark=(20, 5))
    assert ">>20F5<<" in grid
    shown = [line.split()[1] for line in grid.splitlines() if line.startswith("rank ")]
    assert len(shown) == 16 and "20" in shown and "0" not in shown

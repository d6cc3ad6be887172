"""A schedule from a file (schedules.imported): round trips, the layout read from the rows, and the one-line
errors for what a file cannot say or says otherwise than the flags.

.venv/bin/pytest tests/schedules/test_imported.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schedules import SCHEDULES, build, validate
from schedules.csv_io import export_csv
from schedules.imported import describe_shape, layout_line, read_schedule_file, schedule_from_text
from schedules.ir import ScheduleError

SYNCHRONOUS = [name for name, info in SCHEDULES.items() if not info.asynchronous]


@pytest.mark.parametrize("name", SYNCHRONOUS)
@pytest.mark.parametrize("comms", [False, True])
def test_every_synchronous_generator_round_trips_through_its_csv(name: str, comms: bool) -> None:
    """Exported (compute only, or with sends and receives) and read back: the very same lowered
    schedule, over several steps too; only the name is the file's."""
    ranks, microbatches = (4, 8) if name != "looped-bfs" else (3, 5)
    for steps in (1, 3):
        ours = build(name, ranks, microbatches, steps=steps)
        text = export_csv(ours, comms=comms).text
        back = schedule_from_text(text, name=f"{name}.csv", steps=steps)
        assert back.actions == ours.actions, (name, steps)
        assert (back.layout, back.chunks, back.microbatches, back.steps) == (
            ours.layout,
            ours.chunks,
            ours.microbatches,
            ours.steps,
        )
        assert back.name == f"{name}.csv" and back.csv == export_csv(ours).text
        validate(back)


# (schedule, P, m, what describe_shape says): a case per placement
SHAPES = [
    ("1f1b", 4, 8, "one per rank (stage s on rank s)"),
    ("interleaved", 4, 8, "in a loop (stage s on rank s mod 4)"),
    ("zb-v", 4, 8, "in a V (rank r holds stages r and 2P-1-r)"),
]


@pytest.mark.parametrize(("name", "ranks", "microbatches", "shape"), SHAPES)
def test_the_layout_is_read_from_the_rows(name: str, ranks: int, microbatches: int, shape: str) -> None:
    schedule = schedule_from_text(export_csv(build(name, ranks, microbatches)).text, name="f.csv")
    assert describe_shape(schedule) == shape
    line = layout_line(schedule, "f.csv")
    assert line.startswith(f"f.csv: P = {ranks} ranks, m = {microbatches} microbatches") and shape in line


def test_another_placement_is_spelled_out() -> None:
    schedule = schedule_from_text("1F0,1B0\n0F0,0B0\n", name="swapped.csv")  # stage 1 on rank 0
    assert describe_shape(schedule) == "as stage 0 on rank 1, stage 1 on rank 0"
    validate(schedule)


# (csv, keyword arguments, what the one-line error says): each a way the flags and the file disagree
DISAGREE = [
    ("0F0,0B0\n1F0,1B0\n", {"ranks": 4}, r"-p 4, but the file has 2 \(leave -p out\)"),
    ("0F0,0B0\n1F0,1B0\n", {"microbatches": 2}, r"-m 2, but the file has 1"),
    ("0F0,0B0\n1F0,1B0\n", {"chunks": 2}, r"--chunks 2, but the file has 1"),
    ("0F0,1F0,1B0,0B0\n", {"layout": "v"}, None),  # one rank: loop and V are the same placement
    ("0F0,2F0,2B0,0B0\n1F0,3F0,3B0,1B0\n", {"layout": "v"}, r"--layout v, but .* in a loop"),
    ("0F0,3F0,3B0,0B0\n1F0,2F0,2B0,1B0\n", {"layout": "loop"}, r"--layout loop, but .* in a V"),
    (
        "0F0,0B0\n1F0,2F0,2B0,1B0\n",
        {},
        r"rows hold 1, 2 stages: chunks per rank cannot be inferred; .* row 1",
    ),
    ("0F0,0B0\n", {"steps": 0}, r"steps must be at least 1"),
]


@pytest.mark.parametrize(("text", "kwargs", "message"), DISAGREE)
def test_what_the_flags_say_must_be_what_the_file_shows(text: str, kwargs: dict, message: str | None) -> None:
    if message is None:
        schedule_from_text(text, name="f.csv", **kwargs)
        return
    with pytest.raises(ScheduleError, match=message) as error:
        schedule_from_text(text, name="f.csv", **kwargs)
    assert "\n" not in str(error.value)


def test_a_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match=r"--schedule-file .*missing\.csv: cannot read it"):
        read_schedule_file(tmp_path / "missing.csv")
    path = tmp_path / "old.csv"
    path.write_text("0F0,0B0,0W0\n")  # old notation: B is the input backward
    assert [str(a.kind) for a in read_schedule_file(path).actions[0][:3]] == ["F", "I", "W"]
    with pytest.raises(
        ScheduleError, match=r"old\.csv: row 1, cell 3: W of stage 0, microbatch 0 comes before"
    ):
        read_schedule_file(path, notation="new")  # read as the new notation, B is a full backward

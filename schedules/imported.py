"""A schedule from a file: PyTorch's schedule CSV, read, checked against what the flags say, repeated over
the steps asked for and lowered, ready for the simulator and the executor alike.

    from schedules.imported import read_schedule_file, layout_line
    schedule = read_schedule_file("zbv.csv", steps=2)          # named "zbv.csv"
    print(layout_line(schedule, "zbv.csv"))   # layout: V (rank r holds stages r and 2P-1-r), 2 chunks ...

    pipesim simulate --schedule-file zbv.csv --model gpt2-small --device h100-sxm

What the file says and what it does not. P is its rows, m its largest microbatch + 1, the placement of
every stage the row that runs it, chunks per rank the stages over the rows: all inferred, and `-p`, `-m`,
`--chunks` and `--layout loop|v` may be given to check them (a mismatch is one line naming what the
file shows). A file whose stages do not spread evenly over its rows has no chunk count: that is an error
naming the rows to add. A CSV describes one step with a flush: `steps` repeats it. The compute-only text
of that one step travels with the schedule (`Schedule.csv`), so a trace of it can rebuild it.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

from schedules.csv_io import Notation, export_csv, import_csv
from schedules.ir import Kind, Schedule, ScheduleError, layout_shape
from schedules.passes import lower

LAYOUTS = ("loop", "v")
"""What --layout can say (schedules.ir.layout_shape names the rest 'other')."""


def read_schedule_file(
    path: str | os.PathLike,
    *,
    steps: int = 1,
    chunks: int | None = None,
    layout: str | None = None,
    notation: Notation = "auto",
    ranks: int | None = None,
    microbatches: int | None = None,
) -> Schedule:
    """The lowered schedule of a PyTorch CSV file (ScheduleError, one line naming the file, if it cannot
    be read, is not a schedule, or disagrees with what the other arguments say)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ScheduleError(f"--schedule-file {os.fspath(path)}: cannot read it ({reason})") from None
    return schedule_from_text(
        text,
        name=Path(path).name,
        steps=steps,
        chunks=chunks,
        layout=layout,
        notation=notation,
        ranks=ranks,
        microbatches=microbatches,
    )


def schedule_from_text(
    text: str,
    *,
    name: str,
    steps: int = 1,
    chunks: int | None = None,
    layout: str | None = None,
    notation: Notation = "auto",
    ranks: int | None = None,
    microbatches: int | None = None,
) -> Schedule:
    """read_schedule_file of the file's text (`name`: the file's name, the schedule's name)."""
    if steps < 1:
        raise ScheduleError(f"steps must be at least 1, got {steps}")
    one_step = import_csv(text, notation=notation, source=name)
    _check_even(one_step, name)
    _check_given(one_step, name, chunks=chunks, layout=layout, ranks=ranks, microbatches=microbatches)
    repeated = tuple(
        tuple(action._replace(step=step) for step in range(steps) for action in actions)
        for actions in one_step.actions
    )
    compute_only = export_csv(one_step).text  # the file's order in pipesim's own words
    return lower(replace(one_step, name=name, steps=steps, actions=repeated, csv=compute_only))


def _check_even(schedule: Schedule, source: str) -> None:
    per_rank = Counter(schedule.layout.placement)
    counts = [per_rank.get(rank, 0) for rank in range(schedule.ranks)]
    if len(set(counts)) > 1:
        most = max(counts)
        short = [rank for rank, count in enumerate(counts) if count < most]
        raise ScheduleError(
            f"{source}: rows hold {', '.join(map(str, counts))} stages: chunks per rank cannot be inferred; "
            f"every rank needs the same number of stages (add stages to row {short[0] + 1}"
            f"{' and others' if len(short) > 1 else ''}, or split the file's stages differently)"
        )


def _check_given(
    schedule: Schedule,
    source: str,
    *,
    chunks: int | None,
    layout: str | None,
    ranks: int | None,
    microbatches: int | None,
) -> None:
    """What the flags say must be what the file shows."""
    for flag, given, found in (
        ("-p", ranks, schedule.ranks),
        ("-m", microbatches, schedule.microbatches),
        ("--chunks", chunks, schedule.chunks),
    ):
        if given is not None and given != found:
            raise ScheduleError(f"{source}: {flag} {given}, but the file has {found} (leave {flag} out)")
    check_layout(schedule, layout, source)


def check_layout(schedule: Schedule, layout: str | None, source: str) -> None:
    """--layout, when given, must be how the file places its stages (one rank, or one stage per rank:
    loop and V are the same placement)."""
    if layout is None:
        return
    if layout not in LAYOUTS:
        raise ScheduleError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout != layout_shape(schedule.layout) and not (
        schedule.ranks == 1 or schedule.num_stages == schedule.ranks
    ):
        raise ScheduleError(
            f"{source}: --layout {layout}, but the file places its stages {describe_shape(schedule)}"
        )


def describe_shape(schedule: Schedule) -> str:
    """How the stages sit on the ranks, in words."""
    shape, ranks = layout_shape(schedule.layout), schedule.ranks
    if shape == "loop":
        if schedule.chunks == 1:
            return "one per rank (stage s on rank s)"
        return f"in a loop (stage s on rank s mod {ranks})"
    if shape == "v":
        return "in a V (rank r holds stages r and 2P-1-r)"
    return "as " + ", ".join(f"stage {s} on rank {r}" for s, r in enumerate(schedule.layout.placement))


def layout_line(schedule: Schedule, source: str) -> str:
    """What a command prints about a schedule read from a file: its layout and where it came from."""
    marker = Kind.OVERLAP_F_B
    overlaps = sum(action.kind is marker and action.step == 0 for action in schedule.actions[0])
    pairs = f", {overlaps} overlapped pairs on rank 0" if overlaps else ""
    return (
        f"{source}: P = {schedule.ranks} ranks, m = {schedule.microbatches} microbatches, "
        f"{schedule.num_stages} stages placed {describe_shape(schedule)}, {schedule.chunks} chunk(s) per rank"
        f"{pairs} per step (inferred from the file)"
    )

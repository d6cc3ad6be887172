"""Text pictures of a schedule: the rank x time grid (from the dry run) and the rank x position grid.

from schedules import build
from schedules.grid import render_grid, render_order
print(render_grid(build("1f1b", ranks=4, microbatches=8)))
print(render_order(build("1f1b", ranks=4, microbatches=8), mark=(1, 3)))

render_grid of 1F1B, P = 4, m = 4 (one column per time unit, each as wide as the widest label):

    rank 0  F0F1F2F3............B0B0..B1B1..B2B2..B3B3
    rank 1  ..F0F1F2........B0B0F3B1B1..B2B2..B3B3....
    rank 2  ....F0F1....B0B0F2B1B1F3B2B2..B3B3........
    rank 3  ......F0B0B0F1B1B1F2B2B2F3B3B3............
    makespan 21; one column = 1 time unit; '.' idle

Idle is '.', a cell shows kind and microbatch (F3, B1, I2, W2) and OPT shows as OP. validate() uses
render_order to show where a schedule is wrong, the bad cell wrapped in >> <<.
"""

from __future__ import annotations

import math
from fractions import Fraction

from schedules.costs import Costs
from schedules.dryrun import Timeline, dry_run
from schedules.ir import COMM_KINDS, Action, Kind, Schedule

_COLORS = {
    Kind.F: "\x1b[44;97m",  # blue
    Kind.B: "\x1b[42;30m",  # green
    Kind.I: "\x1b[46;30m",  # cyan
    Kind.W: "\x1b[43;30m",  # yellow
    Kind.OPT: "\x1b[45;97m",  # magenta
}
_COMM_COLOR = "\x1b[2m"
_RESET = "\x1b[0m"
_MAX_SCALE = 8  # at most this many columns per time unit when costs are fractional


def cell_label(action: Action) -> str:
    """What a time-grid cell shows: F3, B1, I2, W2, OP; '~' for communication."""
    if action.kind is Kind.OPT:
        return "OP"
    if action.kind in COMM_KINDS:
        return "~"
    return f"{action.kind.value}{'' if action.microbatch is None else action.microbatch}"


def _exact(time: float) -> Fraction:
    """A time as a fraction, forgiving float rounding (1/3 + 1/3 + 1/3 is 1)."""
    return Fraction(time).limit_denominator(10**6)


def _columns_per_unit(timeline: Timeline, max_columns: int) -> Fraction | None:
    """Columns per time unit: 1 if every start and end is an integer, else the smallest integer scale that
    makes them integers; None if that does not fit in max_columns (the caller squeezes)."""
    times = {t for ends in timeline.end for t in ends} | {t for starts in timeline.start for t in starts}
    makespan = _exact(timeline.makespan)
    for scale in range(1, _MAX_SCALE + 1):
        if makespan * scale > max_columns:
            return None
        if all((_exact(t) * scale).denominator == 1 for t in times):
            return Fraction(scale)
    return None


def render_grid(
    schedule: Schedule, costs: Costs | None = None, *, color: bool = False, width: int = 160
) -> str:
    """The rank x time picture of the dry run, at most about `width` characters wide.

    A column shows the action running at its middle. When the exact picture is too wide, columns
    shrink to one character (the kind letter) and each covers a stretch of time.
    """
    timeline = dry_run(schedule, costs)
    head = len(f"rank {schedule.ranks - 1}  ")
    labels = [cell_label(a) for _, a in schedule.all_actions() if a.kind not in COMM_KINDS]
    cell = max((len(label) for label in labels), default=1)
    makespan = _exact(timeline.makespan) or Fraction(1)
    scale = _columns_per_unit(timeline, max(1, (width - head) // cell))
    if scale is None:  # squeeze: one character per column, a whole number of time units per column
        cell, scale = 1, Fraction(1, math.ceil(makespan / max(1, width - head)))
    columns = max(1, math.ceil(makespan * scale))
    rows = []
    for rank, actions in enumerate(schedule.actions):
        cells = ["." * cell] * columns
        kinds: list[Kind | None] = [None] * columns
        for index, action in enumerate(actions):
            first = math.ceil(_exact(timeline.start[rank][index]) * scale - Fraction(1, 2))
            last = math.ceil(_exact(timeline.end[rank][index]) * scale - Fraction(1, 2))
            for column in range(max(first, 0), min(last, columns)):
                cells[column] = cell_label(action).ljust(cell)[:cell]
                kinds[column] = action.kind
        rows.append(f"rank {rank}".ljust(head) + _paint(cells, kinds, color))
    per_column = 1 / scale
    unit = "1 time unit" if per_column == 1 else f"{float(per_column):.3g} time units"
    footer = f"makespan {float(timeline.makespan):g}; one column = {unit}; '.' idle"
    return "\n".join([*rows, footer])


def _paint(cells: list[str], kinds: list[Kind | None], color: bool) -> str:
    if not color:
        return "".join(cells)
    painted = []
    for text, kind in zip(cells, kinds, strict=True):
        if kind is None:
            painted.append(text)
        else:
            painted.append(_COLORS.get(kind, _COMM_COLOR) + text + _RESET)
    return "".join(painted)


def render_order(schedule: Schedule, mark: tuple[int, int] | None = None, *, width: int = 150) -> str:
    """The rank x position grid of action texts; `mark` = (rank, index) is wrapped in >> <<.

    Long schedules show a window of positions around the mark (or the first positions); more than 16
    ranks show the 16 around the marked rank.
    """
    ranks = range(schedule.ranks)
    if schedule.ranks > 16:
        low = min(max(0, (mark[0] if mark else 0) - 8), schedule.ranks - 16)
        ranks = range(low, low + 16)
    length = max((len(actions) for actions in schedule.actions), default=0)
    texts = {(r, i): str(a) for r in ranks for i, a in enumerate(schedule.actions[r])}
    cell = max((len(t) for t in texts.values()), default=1) + 4
    head = len(f"rank {schedule.ranks - 1}  ")
    visible = max(1, (width - head) // (cell + 1))
    center = mark[1] if mark else 0
    first = max(0, min(center - visible // 2, length - visible)) if mark else 0
    columns = range(first, min(length, first + visible))
    lines = [" " * head + " ".join(f"  {i:<{cell - 2}}" for i in columns).rstrip()]
    for r in ranks:
        row = []
        for i in columns:
            text = texts.get((r, i), "")
            row.append((f">>{text}<<" if mark == (r, i) else f"  {text}").ljust(cell))
        line = " ".join(row).rstrip()
        if not line and columns:
            line = f"  (its {len(schedule.actions[r])} actions end before position {columns.start})"
        lines.append(f"rank {r}".ljust(head) + line)
    if first > 0 or columns.stop < length or len(ranks) < schedule.ranks:
        lines.append(
            f"(positions {columns.start}..{columns.stop - 1} of {length}, "
            f"ranks {ranks.start}..{ranks.stop - 1} of {schedule.ranks})"
        )
    return "\n".join(lines)

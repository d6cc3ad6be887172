"""PyTorch interop: schedules to and from torch.distributed.pipelining's schedule CSV.

    from schedules import build
    from schedules.csv_io import export_csv, read_csv, write_csv
    write_csv("1f1b.csv", build("1f1b", ranks=4, microbatches=8))    # then, in PyTorch:
    # _PipelineScheduleRuntime(stages, 8)._load_csv("1f1b.csv")
    schedule = read_csv("theirs.csv", notation="auto")

    pipesim schedules export 1f1b -p 4 -m 8 -o 1f1b.csv
    pipesim schedules import 1f1b.csv

The format (what `_dump_csv` writes and `_load_csv` reads): one row per rank, one action per cell, no
header, an empty cell is an idle slot. Action text is `<stage><kind><microbatch>`: `0F3`, `3I2`, `1B0`,
`2W1`, and in the comm-lowered form also `1SEND_F0`, `2RECV_F0`, `2SEND_B0`, `1RECV_B0`.

Note: two notations exist for the backward, and a bare `B` means different things in each:

    new (PyTorch >= 2.6):  F  I (backward for inputs)  W (for weights)  B  (full backward)
    old (PyTorch <= 2.5):  F  B (backward for inputs)  W (for weights)  BW (full backward)

`notation="auto"` reads the old one when a cell says BW, or says W where no cell says I.

What the CSV cannot say: optimizer steps, weight versions, several steps, AMDP's replica reduce and
broadcast. Export drops them and says so in `CsvExport.warnings`. Import ignores the actions PyTorch adds
for FSDP and data parallelism (UNSHARD, RESHARD, REDUCE_GRAD) and the sends and receives (our lowering
re-adds them). An overlapped pair is one cell both ways: `(0F5;7B1)OVERLAP_F_B` is the IR's
`0OVERLAP_F_B5 0F5 7B1` (schedules/semantics.py), whichever order the cell lists its forward and backward.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from schedules.fileio import write_atomic
from schedules.ir import (
    COMPUTE_KINDS,
    Action,
    Kind,
    Layout,
    Schedule,
    ScheduleError,
    Versioning,
)
from schedules.passes import add_comms

Notation = Literal["new", "old", "auto"]
NOTATIONS: tuple[str, ...] = ("auto", "new", "old")

TORCH_COMM_KINDS = frozenset({Kind.SEND_F, Kind.RECV_F, Kind.SEND_B, Kind.RECV_B})
"""The sends and receives PyTorch's comm-lowered CSV has (AMDP's SEND_G/SEND_W have no counterpart)."""

_NEW_CODES = {"F": Kind.F, "I": Kind.I, "W": Kind.W, "B": Kind.B}
_OLD_CODES = {"F": Kind.F, "B": Kind.I, "W": Kind.W, "BW": Kind.B}
_COMM_CODES = {kind.value: kind for kind in TORCH_COMM_KINDS}
_IGNORED_CODES = frozenset({"UNSHARD", "RESHARD", "REDUCE_GRAD"})
_CELL_RE = re.compile(
    r"^(?P<stage>\d+)(?P<code>SEND_F|RECV_F|SEND_B|RECV_B|REDUCE_GRAD|UNSHARD|RESHARD|BW|F|I|B|W)"
    r"(?P<microbatch>\d*)$"
)
_OVERLAP_RE = re.compile(r"^\((?P<inner>[^()]*)\)OVERLAP_F_B$")
_MARKER = Kind.OVERLAP_F_B.value
_EXAMPLES = "expected e.g. '0F3', '1I2', '2B0', '1SEND_F0' or an empty cell"


@dataclass(frozen=True, kw_only=True)
class CsvExport:
    """An exported schedule: the CSV text and what it had to leave out."""

    text: str
    """The CSV: one row per rank, one action per cell, no header, rows ending in '\\n'."""
    warnings: tuple[str, ...] = ()
    """One line per thing the CSV cannot say (steps beyond the one exported, optimizer steps, versions)."""


# --- export ---------------------------------------------------------------------------------------


def export_csv(schedule: Schedule, *, comms: bool = False, step: int = 0) -> CsvExport:
    """PyTorch's CSV of one step of a schedule: compute actions only, or with sends and receives."""
    if not 0 <= step < schedule.steps:
        raise ScheduleError(f"step {step} is outside the schedule's steps 0..{schedule.steps - 1}")
    if comms:
        schedule = add_comms(schedule)
    keep = COMPUTE_KINDS | {Kind.OVERLAP_F_B} | (TORCH_COMM_KINDS if comms else frozenset())
    rows = [
        _cells([action for action in actions if action.step == step and action.kind in keep])
        for actions in schedule.actions
    ]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return CsvExport(text=buffer.getvalue(), warnings=_export_warnings(schedule, step))


def write_csv(
    path: str | os.PathLike, schedule: Schedule, *, comms: bool = False, step: int = 0
) -> CsvExport:
    """export_csv, written atomically to path; returns the export (its warnings are for the user)."""
    export = export_csv(schedule, comms=comms, step=step)
    write_atomic(path, export.text)
    return export


def torch_text(action: Action) -> str:
    """An action in PyTorch's (new) notation: no step, no version, e.g. '3I2', '1SEND_F0'."""
    microbatch = "" if action.microbatch is None else str(action.microbatch)
    return f"{action.stage}{action.kind.value}{microbatch}"


def _cells(actions: list[Action]) -> list[str]:
    """One rank's actions as cells; an overlapped pair (marker, forward, backward) as one cell."""
    cells, position = [], 0
    while position < len(actions):
        action = actions[position]
        if action.kind is Kind.OVERLAP_F_B:
            halves = actions[position + 1 : position + 3]
            cells.append(f"({';'.join(torch_text(half) for half in halves)}){_MARKER}")
            position += 3
        else:
            cells.append(torch_text(action))
            position += 1
    return cells


def _export_warnings(schedule: Schedule, step: int) -> tuple[str, ...]:
    name = schedule.name
    warnings = []
    if schedule.steps > 1:
        warnings.append(
            f"{name} covers {schedule.steps} steps; exported step {step} only "
            "(a PyTorch schedule CSV describes one step)"
        )
    if not schedule.synchronous:
        warnings.append(
            f"{name} is asynchronous: its optimizer steps and weight versions are dropped "
            "(PyTorch's CSV has neither), so PyTorch would run it with a flush"
        )
    kinds = {action.kind for _, action in schedule.all_actions()}
    exported = COMPUTE_KINDS | TORCH_COMM_KINDS | {Kind.OPT, Kind.OVERLAP_F_B}
    dropped = sorted(kind.value for kind in kinds - exported)
    if dropped:
        warnings.append(f"{name}: {', '.join(dropped)} actions dropped (PyTorch's CSV has no such action)")
    if schedule.layout.pipelines > 1:
        warnings.append(
            f"{name} runs {schedule.layout.pipelines} pipelines at once; each stage sees only its "
            "pipeline's microbatches, which PyTorch's validator rejects"
        )
    return tuple(warnings)


# --- import ---------------------------------------------------------------------------------------


class _Cell(NamedTuple):
    """One parsed action of the CSV, with where it came from (1-based row and cell)."""

    row: int
    cell: int
    stage: int
    code: str
    microbatch: int | None


def read_csv(
    path: str | os.PathLike,
    *,
    notation: Notation = "auto",
    chunks: int | None = None,
    pipelines: int = 1,
) -> Schedule:
    """import_csv of a file; a missing or unreadable file is a ScheduleError naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ScheduleError(f"cannot read schedule CSV {os.fspath(path)}: {reason}") from None
    return import_csv(text, notation=notation, chunks=chunks, pipelines=pipelines, source=os.fspath(path))


def import_csv(
    text: str,
    *,
    notation: Notation = "auto",
    chunks: int | None = None,
    pipelines: int = 1,
    source: str = "<csv>",
) -> Schedule:
    """A compute-only, flushing Schedule named 'csv' from PyTorch's CSV text.

    Ranks are the rows; stage placement is read from the rows (stage s sits on the row that runs it);
    microbatches = the largest microbatch + 1. chunks (model chunks per rank) is inferred as
    stages / (rows x pipelines) unless given. pipelines > 1 reads AMDP-style stage numbers.
    """
    if notation not in NOTATIONS:
        raise ScheduleError(f"notation must be one of {', '.join(NOTATIONS)}, got {notation!r}")
    rows = _parse_rows(text, source)
    codes = _resolve_notation(rows, notation, source)
    _check_order(rows, codes, source)
    actions = [
        [Action(cell.stage, codes[cell.code], cell.microbatch) for cell in row if cell.code in codes]
        for row in rows
    ]
    if not any(action.kind in COMPUTE_KINDS for row in actions for action in row):
        raise ScheduleError(f"{source}: no forward or backward actions")
    layout, chunks = _layout(rows, codes, chunks, pipelines, source)
    microbatches = 1 + max(action.microbatch or 0 for row in actions for action in row)
    return Schedule(
        name="csv",
        layout=layout,
        microbatches=microbatches,
        steps=1,
        chunks=chunks,
        versioning=Versioning.FLUSH,
        actions=tuple(tuple(row) for row in actions),
    )


def _parse_rows(text: str, source: str) -> list[list[_Cell]]:
    reader = csv.reader(io.StringIO(text), strict=True)
    rows = []
    try:
        for row_number, row in enumerate(reader, 1):
            cells = enumerate(row, 1)
            rows.append(
                [parsed for number, cell in cells for parsed in _parse_cell(cell, row_number, number, source)]
            )
    except csv.Error as error:
        raise ScheduleError(f"{source}: row {reader.line_num}: not CSV ({error})") from None
    if not any(rows):
        raise ScheduleError(f"{source}: no actions (expected one row per rank, one action per cell)")
    return rows


def _parse_cell(text: str, row: int, cell: int, source: str) -> list[_Cell]:
    """The actions of one cell: none for an empty cell; for an OVERLAP_F_B, the marker and its halves."""
    text = text.strip()
    if not text:
        return []
    overlap = _OVERLAP_RE.match(text)
    parts = overlap["inner"].split(";") if overlap else [text]
    cells = []
    for part in parts:
        match = _CELL_RE.match(part.strip())
        if match is None:
            raise ScheduleError(f"{source}: row {row}, cell {cell}: malformed action {text!r} ({_EXAMPLES})")
        code, microbatch = match["code"], match["microbatch"]
        if not microbatch and code not in _IGNORED_CODES:
            raise ScheduleError(f"{source}: row {row}, cell {cell}: action {text!r} names no microbatch")
        cells.append(_Cell(row, cell, int(match["stage"]), code, int(microbatch) if microbatch else None))
    return _pair(cells, text, source) if overlap else cells


def _pair(cells: list[_Cell], text: str, source: str) -> list[_Cell]:
    """An OVERLAP_F_B cell as the IR's pair: the marker, the forward, the backward."""
    forwards = [cell for cell in cells if cell.code == "F"]
    others = [cell for cell in cells if cell.code != "F"]
    if len(forwards) != 1 or len(others) != 1 or others[0].code not in ("B", "I", "BW"):
        where = f"{source}: row {cells[0].row}, cell {cells[0].cell}"
        raise ScheduleError(f"{where}: {text!r} overlaps what pipesim cannot: one forward and one backward")
    forward = forwards[0]
    return [forward._replace(code=_MARKER), forward, others[0]]


def _resolve_notation(rows: list[list[_Cell]], notation: Notation, source: str) -> dict[str, Kind]:
    """The code -> Kind table for this file: comms included, FSDP/DP bookkeeping left out."""
    first = {}
    for row in rows:
        for cell in row:
            first.setdefault(cell.code, cell)
    if notation == "auto":
        if "BW" in first and "I" in first:
            bw, i = first["BW"], first["I"]
            raise ScheduleError(
                f"{source}: mixes the old notation (BW at row {bw.row}, cell {bw.cell}) and the new one "
                f"(I at row {i.row}, cell {i.cell}); fix the file or pass the notation"
            )
        old = "BW" in first or ("W" in first and "I" not in first)
        notation = "old" if old else "new"
    table = _OLD_CODES if notation == "old" else _NEW_CODES
    foreign = {"new": "BW", "old": "I"}[notation]
    if foreign in first:
        cell = first[foreign]
        meaning = (
            "the old notation's full backward" if foreign == "BW" else "the new notation's input backward"
        )
        raise ScheduleError(
            f"{source}: row {cell.row}, cell {cell.cell}: {foreign!r} is {meaning}, "
            f"but notation is {notation!r} (try 'auto')"
        )
    return {**table, **_COMM_CODES, _MARKER: Kind.OVERLAP_F_B}


def _check_order(rows: list[list[_Cell]], codes: dict[str, Kind], source: str) -> None:
    """PyTorch's own rules, reported by cell: each action once, a backward after its forward, W after I."""
    needs = {Kind.B: Kind.F, Kind.I: Kind.F, Kind.W: Kind.I}
    names = {kind: code for code, kind in codes.items()}
    seen: set[tuple[int, Kind, int | None]] = set()
    for row in rows:
        for cell in row:
            kind = codes.get(cell.code)
            if kind not in COMPUTE_KINDS:
                continue
            where = f"{source}: row {cell.row}, cell {cell.cell}"
            if (cell.stage, kind, cell.microbatch) in seen:
                raise ScheduleError(
                    f"{where}: {cell.code} of stage {cell.stage}, microbatch {cell.microbatch} appears twice"
                )
            before = needs.get(kind)
            if before is not None and (cell.stage, before, cell.microbatch) not in seen:
                raise ScheduleError(
                    f"{where}: {cell.code} of stage {cell.stage}, microbatch {cell.microbatch} "
                    f"comes before its {names[before]}"
                )
            seen.add((cell.stage, kind, cell.microbatch))


def _layout(
    rows: list[list[_Cell]], codes: dict[str, Kind], chunks: int | None, pipelines: int, source: str
) -> tuple[Layout, int]:
    """Read the placement from the rows and check it against chunks and pipelines."""
    owner: dict[int, _Cell] = {}
    for row in rows:
        for cell in row:
            seen = owner.setdefault(cell.stage, cell)
            if seen.row != cell.row:
                raise ScheduleError(
                    f"{source}: row {cell.row}, cell {cell.cell}: stage {cell.stage} already runs on "
                    f"row {seen.row} (a stage lives on one rank)"
                )
    num_stages = 1 + max(cell.stage for row in rows for cell in row if cell.code in codes)
    missing = [stage for stage in range(num_stages) if stage not in owner]
    if missing:
        raise ScheduleError(
            f"{source}: stage {missing[0]} appears in no row (stages are 0..{num_stages - 1})"
        )
    ranks = len(rows)
    if pipelines < 1 or num_stages % pipelines:
        raise ScheduleError(f"{source}: {num_stages} stages cannot form {pipelines} pipelines")
    per_rank, uneven = divmod(num_stages, ranks * pipelines)
    if chunks is not None and (chunks < 1 or uneven or per_rank != chunks):
        raise ScheduleError(
            f"{source}: {num_stages} stages on {ranks} rows is not {chunks} chunks per rank "
            f"x {pipelines} pipeline(s)"
        )
    layout = Layout(
        ranks=ranks,
        stages_per_pipeline=num_stages // pipelines,
        pipelines=pipelines,
        placement=tuple(owner[stage].row - 1 for stage in range(num_stages)),
    )
    return layout, chunks or (per_rank if per_rank and not uneven else 1)

"""The one trace format for predicted (simulator) and measured (executor) runs.

A trace is what happened, action by action, on every rank: start and end on one clock (seconds from the
start of the run), the weight version read or written, bytes moved and bytes held. JSON layout
(`format_version` 1; see traces/README.md):

    {"format": "pipesim-trace", "format_version": 1, "source": "simulated" | "measured",
     "schedule": {"name": "1f1b", "ranks": 4, "microbatches": 8, "steps": 1, "chunks": 1,
                  "versioning": "flush", "stages_per_pipeline": 4, "pipelines": 1,
                  "placement": [0, 1, 2, 3]},
     "meta": {...free-form: cost model, device, seed, versions of the tools...},
     "events": [{"rank": 0, "action": "0F0@v0", "start": 0.0, "end": 0.001,
                 "stream": "compute", "bytes": 0, "memory": 123456}, ...]}

Events are sorted by (start, rank, position in the rank's action list) so equal inputs give
byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schedules.errors import UserError
from schedules.imported import schedule_from_text
from schedules.ir import COMM_KINDS, Action, Layout, Schedule, ScheduleError, Versioning
from schedules.registry import SCHEDULES, build

FORMAT = "pipesim-trace"
FORMAT_VERSION = 1
SOURCES = ("simulated", "measured")
STREAMS = ("compute", "send", "recv")


class TraceError(UserError):
    """A trace file or trace object is invalid; the message is for the user."""


@dataclass(frozen=True, kw_only=True)
class ScheduleHeader:
    """What a trace records about the schedule it ran: enough to rebuild its layout."""

    name: str
    ranks: int
    microbatches: int
    steps: int
    chunks: int
    versioning: Versioning
    stages_per_pipeline: int
    pipelines: int
    placement: tuple[int, ...]
    csv: str | None = None
    """A schedule read from a file: its one step as a compute-only PyTorch CSV (Schedule.csv), from
    which it is rebuilt; None (and absent from the JSON) for pipesim's own generators."""

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleHeader:
        layout = schedule.layout
        return cls(
            name=schedule.name,
            ranks=layout.ranks,
            microbatches=schedule.microbatches,
            steps=schedule.steps,
            chunks=schedule.chunks,
            versioning=schedule.versioning,
            stages_per_pipeline=layout.stages_per_pipeline,
            pipelines=layout.pipelines,
            placement=layout.placement,
            csv=schedule.csv,
        )

    @property
    def layout(self) -> Layout:
        return Layout(
            ranks=self.ranks,
            stages_per_pipeline=self.stages_per_pipeline,
            pipelines=self.pipelines,
            placement=self.placement,
        )


@dataclass(frozen=True, kw_only=True)
class Event:
    """One action as it ran (or is predicted to run) on one rank."""

    rank: int
    action: Action
    start: float
    """Seconds from the start of the run, on the common clock."""
    end: float
    """Seconds; end >= start."""
    stream: str = "compute"
    """'compute' for F/B/I/W/OPT, 'send' or 'recv' for communication."""
    bytes: int = 0
    """Bytes moved by a send or receive (0 for compute)."""
    memory: int | None = None
    """Bytes the rank holds right after the action (weights x versions, optimizer state,
    gradients, stashed activations, buffers); None where not recorded."""

    @property
    def duration(self) -> float:
        return self.end - self.start


def stream_of(action: Action) -> str:
    if action.kind in COMM_KINDS:
        return "send" if action.kind.value.startswith("SEND") else "recv"
    return "compute"


@dataclass(frozen=True, kw_only=True)
class Trace:
    source: str
    """'simulated' or 'measured'."""
    schedule: ScheduleHeader
    events: Sequence[Event]
    """In trace order: a tuple, or for a trace read from a file the columns it was read into
    (traces.columnar.ColumnEvents, which makes the Events on first use and equals their tuple)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance: cost model, device, seed, tool versions."""

    def rank_events(self, rank: int) -> list[Event]:
        return [event for event in self.events if event.rank == rank]

    @property
    def makespan(self) -> float:
        return max((event.end for event in self.events), default=0.0)


def schedule_of(header: ScheduleHeader) -> Schedule:
    """Rebuild the lowered schedule a trace ran from its header (TraceError if pipesim cannot: the
    schedule is not one of its generators nor carries its CSV, or the header names an impossible size)."""
    if header.csv is not None:
        return _imported(header)
    if header.name not in SCHEDULES:
        known = ", ".join(SCHEDULES)
        raise TraceError(f"schedule {header.name!r} is not one pipesim can rebuild (known: {known})")
    try:
        schedule = build(
            header.name, header.ranks, header.microbatches, steps=header.steps, chunks=header.chunks
        )
    except ScheduleError as error:
        raise TraceError(f"the trace's schedule cannot be rebuilt: {error}") from None
    if ScheduleHeader.of(schedule) != header:
        raise TraceError(f"the trace's schedule header does not match pipesim's {header.name} of that size")
    return schedule


def _imported(header: ScheduleHeader) -> Schedule:
    """A schedule read from a file, rebuilt from the CSV its trace carries."""
    try:
        schedule = schedule_from_text(header.csv or "", name=header.name, steps=header.steps)
    except ScheduleError as error:
        raise TraceError(f"the trace's schedule cannot be rebuilt from its CSV: {error}") from None
    if ScheduleHeader.of(schedule) != header:
        raise TraceError(f"the trace's schedule header does not match the CSV it carries ({header.name})")
    return schedule

"""A trace's events as flat arrays, one per field in file order, and the lazy sequence of Events over them.

    from traces.io import read_trace
    from traces.columnar import columns_of
    columns = columns_of(read_trace("big.json"))     # EventColumns; None for a trace built in memory
    columns.end[columns.rank == 0].max()

read_trace keeps the events of a file in columns and makes Event objects only when something asks for
them (ColumnEvents): as objects an event costs some 500 bytes and 1.5 microseconds to make, as columns
83 bytes and nothing more, and the checks and metrics of traces/columnar read the columns directly.

Note: a field that is None in an Event is -1 here (the numbers of an action are never negative); the
memory column keeps a mask instead, since any integer is a valid reading there:

    rank int64 | kind int8 (KINDS) | stage, microbatch, step, version, peer int64 (-1: None)
    start, end float64 | stream int8 (STREAMS) | bytes int64 | memory int64 + recorded bool
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from schedules.fileio import paused_gc
from schedules.ir import Action, Kind
from traces.schema import STREAMS, Event, stream_of

KINDS: tuple[Kind, ...] = tuple(Kind)
"""The kind of code c is KINDS[c]."""
KIND_CODE: dict[Kind, int] = {kind: code for code, kind in enumerate(KINDS)}
"""Code of each Kind (the simulator's columnar schedules use the same)."""
STREAM_CODE = {stream: code for code, stream in enumerate(STREAMS)}
"""The stream of code c is STREAMS[c]."""
STREAM_OF_KIND = np.array([STREAM_CODE[stream_of(Action(0, kind))] for kind in KINDS], dtype=np.int8)
"""Per kind code, the code of the stream its events belong to."""
NONE = -1
"""A missing microbatch, version or peer."""


def codes(*kinds: Kind) -> list[int]:
    return [KIND_CODE[kind] for kind in kinds]


@dataclass(frozen=True, kw_only=True, eq=False)
class EventColumns:
    """Every event of a trace, field by field, in the trace's order (sorted by start)."""

    rank: np.ndarray
    """int64 rank that ran the action."""
    kind: np.ndarray
    """int8 code of the action's Kind (KINDS)."""
    stage: np.ndarray
    """int64 stage of the action."""
    microbatch: np.ndarray
    """int64, -1 for none."""
    step: np.ndarray
    """int64 optimizer step."""
    version: np.ndarray
    """int64 weight version read, written or carried; -1 for none."""
    peer: np.ndarray
    """int64 other stage of a G/W message; -1 for none."""
    start: np.ndarray
    """float64 seconds."""
    end: np.ndarray
    """float64 seconds."""
    stream: np.ndarray
    """int8 code of the stream (STREAMS)."""
    bytes: np.ndarray
    """int64 bytes moved."""
    memory: np.ndarray
    """int64 bytes held right after the action (0 where not recorded)."""
    recorded: np.ndarray
    """bool: whether the event recorded its memory (False: the Event's memory is None)."""

    def __len__(self) -> int:
        return int(self.rank.size)

    def is_kind(self, *kinds: Kind) -> np.ndarray:
        """bool per event: is its action of one of these kinds."""
        return np.isin(self.kind, codes(*kinds))

    def signed_zero(self) -> bool:
        """Whether a time is -0.0: which of two equal zeros an array reduction keeps is not promised, so
        such a trace is measured on its Events (where the order of the loop decides)."""
        return any(bool(np.any((times == 0) & np.signbit(times))) for times in (self.start, self.end))

    def action(self, index: int) -> Action:
        """The Action of one event."""
        stage, microbatch, step, version, peer = (
            int(column[index]) for column in (self.stage, self.microbatch, self.step, self.version, self.peer)
        )
        return Action(stage, KINDS[self.kind[index]], _some(microbatch), step, _some(version), _some(peer))

    def events(self) -> tuple[Event, ...]:
        """The Event objects, equal to what the JSON form reads into one by one."""
        with paused_gc():
            return _events(self)


def _some(value: int) -> int | None:
    return None if value == NONE else value


def _optional(column: np.ndarray) -> list[int | None]:
    values = column.tolist()
    if column.size and column.min() == NONE:
        return [None if value == NONE else value for value in values]
    return values


def _events(columns: EventColumns) -> tuple[Event, ...]:
    kinds = np.array(KINDS, dtype=object)[columns.kind].tolist()
    actions = map(
        Action,
        columns.stage.tolist(),
        kinds,
        _optional(columns.microbatch),
        columns.step.tolist(),
        _optional(columns.version),
        _optional(columns.peer),
    )
    streams = np.array(STREAMS, dtype=object)[columns.stream].tolist()
    memory = columns.memory.astype(object)
    memory[~columns.recorded] = None
    new, fill = object.__new__, object.__setattr__

    def make(
        rank: int, action: Action, start: float, end: float, stream: str, moved: int, held: Any
    ) -> Event:
        # Event is frozen: filling the instance's dict at once costs a third of __init__ (traces.io)
        event = new(Event)
        fill(event, "__dict__", {
            "rank": rank, "action": action, "start": start, "end": end,
            "stream": stream, "bytes": moved, "memory": held,
        })  # fmt: skip
        return event

    fields = (columns.rank.tolist(), actions, columns.start.tolist(), columns.end.tolist(), streams)
    return tuple(map(make, *fields, columns.bytes.tolist(), memory.tolist()))


class ColumnEvents(Sequence[Event]):
    """A trace's events held as columns: a sequence of Events, made on first use and kept. Equal to the
    tuple of the same Events (so a trace read from a file equals the trace that was written)."""

    __slots__ = ("_events", "columns")

    def __init__(self, columns: EventColumns) -> None:
        self.columns = columns
        self._events: tuple[Event, ...] | None = None

    def objects(self) -> tuple[Event, ...]:
        if self._events is None:
            self._events = self.columns.events()
        return self._events

    def __len__(self) -> int:
        return len(self.columns)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Event, ...]: ...
    def __getitem__(self, index: int | slice) -> Event | tuple[Event, ...]:
        return self.objects()[index]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.objects())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ColumnEvents):
            other = other.objects()
        return self.objects() == other if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.objects())

    def __repr__(self) -> str:
        return repr(self.objects())

    def __getstate__(self) -> EventColumns:  # pickled (the dashboard's cache) as columns alone
        return self.columns

    def __setstate__(self, columns: EventColumns) -> None:
        self.columns, self._events = columns, None


def columns_of(trace: Any) -> EventColumns | None:
    """The columns of a trace read from a file (traces.io.read_trace); None for one built in memory."""
    events = trace.events
    return events.columns if isinstance(events, ColumnEvents) else None

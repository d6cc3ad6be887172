"""Read and write traces as JSON, atomically, with one-line errors for bad files.

from traces.io import read_trace, write_trace
write_trace("runs/a/trace.json", trace)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

try:
    import orjson
except ImportError:  # optional: the standard library reads the same traces, more slowly
    orjson = None

from schedules.fileio import paused_gc, write_atomic
from schedules.ir import COMPUTE_KINDS, Action, Kind, ScheduleError, Versioning, parse_action
from traces.columnar.check import passes
from traces.columnar.columns import ColumnEvents
from traces.columnar.parse import event_columns
from traces.schema import (
    FORMAT,
    FORMAT_VERSION,
    SOURCES,
    STREAMS,
    Event,
    ScheduleHeader,
    Trace,
    TraceError,
    stream_of,
)

TRACE_NAME = "trace.json"
"""The trace of a run folder."""
_STREAM_OF_KIND = {kind: stream_of(Action(0, kind)) for kind in Kind}


def trace_to_dict(trace: Trace) -> dict[str, Any]:
    header = trace.schedule
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": trace.source,
        "schedule": {
            "name": header.name,
            "ranks": header.ranks,
            "microbatches": header.microbatches,
            "steps": header.steps,
            "chunks": header.chunks,
            "versioning": header.versioning.value,
            "stages_per_pipeline": header.stages_per_pipeline,
            "pipelines": header.pipelines,
            "placement": list(header.placement),
            **({} if header.csv is None else {"csv": header.csv}),
        },
        "meta": trace.meta,
        "events": [
            {
                "rank": event.rank,
                "action": str(event.action),
                "start": event.start,
                "end": event.end,
                "stream": event.stream,
                "bytes": event.bytes,
                "memory": event.memory,
            }
            for event in trace.events
        ],
    }


def dumps_trace(trace: Trace) -> str:
    return json.dumps(trace_to_dict(trace), sort_keys=True, separators=(",", ":")) + "\n"


def write_trace(path: str | os.PathLike, trace: Trace) -> None:
    write_atomic(path, dumps_trace(trace))


def trace_path(path: str | os.PathLike) -> Path:
    """A trace file as given, or a run folder's trace.json; TraceError when neither is there."""
    path = Path(path)
    if path.is_dir():
        inside = path / TRACE_NAME
        if not inside.is_file():
            raise TraceError(f"{path}: a folder without a {TRACE_NAME} (not a finished run folder?)")
        return inside
    if not path.exists():
        raise TraceError(f"{path}: no such trace file or run folder")
    return path


def load_trace(path: str | os.PathLike) -> Trace:
    """read_trace of a trace file or of a run folder's trace.json (what the commands accept)."""
    return read_trace(trace_path(path))


def read_trace(path: str | os.PathLike) -> Trace:
    """Load a trace; raise TraceError with one line naming the file and the problem. The events of a
    file as pipesim writes it are held as columns (traces/columnar), others as Events."""
    try:
        data = _loads(Path(path).read_bytes())
    except OSError as error:
        raise TraceError(f"{path}: cannot read trace ({error.strerror})") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise TraceError(f"{path}: not JSON (line {error.lineno}: {error.msg})") from None
    try:
        return trace_from_dict(data)
    except TraceError as error:
        raise TraceError(f"{path}: {error}") from None


def _loads(raw: bytes) -> Any:
    """The JSON value of a file's bytes: orjson where it is installed (a million-event trace parses in a
    third of the time), else, or when orjson refuses the text, the standard library, whose errors name
    the line (and which accepts what it always accepted)."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw.decode("utf-8"))


def trace_from_dict(data: Any) -> Trace:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TraceError(f'not a pipesim trace (no "format": "{FORMAT}")')
    if data.get("format_version") != FORMAT_VERSION:
        raise TraceError(
            f"trace format_version {data.get('format_version')!r}, this pipesim reads {FORMAT_VERSION}"
        )
    if data.get("source") not in SOURCES:
        raise TraceError(f"source must be one of {SOURCES}, got {data.get('source')!r}")
    try:
        s = data["schedule"]
        header = ScheduleHeader(
            name=str(s["name"]),
            ranks=int(s["ranks"]),
            microbatches=int(s["microbatches"]),
            steps=int(s["steps"]),
            chunks=int(s["chunks"]),
            versioning=Versioning(s["versioning"]),
            stages_per_pipeline=int(s["stages_per_pipeline"]),
            pipelines=int(s["pipelines"]),
            placement=tuple(int(rank) for rank in s["placement"]),
            csv=None if s.get("csv") is None else str(s["csv"]),
        )
        header.layout  # noqa: B018 - validates the placement
    except (KeyError, TypeError, ValueError) as error:
        raise TraceError(f"bad schedule header ({error})") from None
    raw_events = data.get("events", [])
    if not isinstance(raw_events, list):
        raise TraceError('"events" must be a list')
    with paused_gc():
        columns = event_columns(raw_events)
        if columns is not None:  # plain events, as pipesim writes them: read and checked as arrays
            meta = dict(data.get("meta") or {})
            if passes(columns, header, complete=meta.get("completed", True) is not False):
                return Trace(source=data["source"], schedule=header, events=ColumnEvents(columns), meta=meta)
        events = _events(raw_events)  # one by one: what is wrong, and where, for the message
        trace = Trace(
            source=data["source"], schedule=header, events=events, meta=dict(data.get("meta") or {})
        )
        check_events(trace)
    return trace


def _events(raw_events: list[Any]) -> tuple[Event, ...]:
    """Events from their JSON form; the fast path for well-formed events, _event for a clear error."""
    parse, new, fill = parse_action, object.__new__, object.__setattr__

    def make(raw: dict) -> Event:
        # Event is frozen: its __init__ sets each field through object.__setattr__, three times the cost
        # of filling the instance's dict at once (a million events: about a second)
        memory = raw.get("memory")
        event = new(Event)
        fill(event, "__dict__", {
            "rank": int(raw["rank"]),
            "action": parse(raw["action"]),
            "start": float(raw["start"]),
            "end": float(raw["end"]),
            "stream": raw.get("stream", "compute"),
            "bytes": int(raw.get("bytes", 0)),
            "memory": None if memory is None else int(memory),
        })  # fmt: skip
        return event

    try:
        return tuple(map(make, raw_events))
    except (KeyError, TypeError, ValueError, ScheduleError, AttributeError):
        for index, raw in enumerate(raw_events):  # find the bad event and say what is wrong with it
            _event(index, raw)
        raise


def _event(index: int, raw: Any) -> Event:
    try:
        return Event(
            rank=int(raw["rank"]),
            action=parse_action(raw["action"]),
            start=float(raw["start"]),
            end=float(raw["end"]),
            stream=str(raw.get("stream", "compute")),
            bytes=int(raw.get("bytes", 0)),
            memory=None if raw.get("memory") is None else int(raw["memory"]),
        )
    except (KeyError, TypeError, ValueError, ScheduleError, AttributeError) as error:
        raise TraceError(f"event {index}: {error}") from None


def check_events(trace: Trace) -> None:
    """What the metrics rely on (traces/README.md): events sorted by start, each on the rank of its
    stage, in the stream of its kind, with end >= start and finite times; and, unless the trace says
    the run stopped early ("completed": false), every forward and backward of its schedule."""
    header = trace.schedule
    placement, streams = header.placement, _STREAM_OF_KIND
    previous = -math.inf
    for index, event in enumerate(trace.events):
        action = event.action
        if not (previous <= event.start <= event.end < math.inf):
            raise TraceError(_bad_times(index, event, previous))
        previous = event.start
        if not (0 <= action.stage < len(placement) and placement[action.stage] == event.rank):
            raise TraceError(f"event {index}: {action} does not run on rank {event.rank} in this layout")
        if streams[action.kind] != event.stream:
            if event.stream not in STREAMS:
                raise TraceError(f"event {index}: stream must be one of {STREAMS}, got {event.stream!r}")
            expected = streams[action.kind]
            raise TraceError(f"event {index}: {action} belongs to stream {expected!r}, not {event.stream!r}")
    if trace.meta.get("completed", True) is not False:
        _check_complete(trace)


def _bad_times(index: int, event: Event, previous: float) -> str:
    if not (math.isfinite(event.start) and math.isfinite(event.end)):
        return f"event {index}: times must be finite numbers of seconds"
    if event.end < event.start:
        return f"event {index}: end {event.end} before start {event.start}"
    return (
        f"event {index}: starts at {event.start}, before the event above it ({previous}); "
        "events must be sorted by start"
    )


def _check_complete(trace: Trace) -> None:
    """Every (stage, step, microbatch) of the schedule has its forward, and its backward (B, or I and W),
    exactly once."""
    header = trace.schedule
    layout = header.layout
    seen: dict[tuple[int, Kind, int | None, int], int] = {}
    for event in trace.events:
        action = event.action
        if action.kind in COMPUTE_KINDS:
            key = (action.stage, action.kind, action.microbatch, action.step)
            if key in seen:
                raise TraceError(f"{action} appears twice")
            seen[key] = 1
    missing = []
    for stage in range(layout.num_stages):
        pipeline = layout.pipeline(stage)
        for step in range(header.steps):
            for microbatch in range(pipeline, header.microbatches, layout.pipelines):
                if (stage, Kind.F, microbatch, step) not in seen:
                    missing.append(Action(stage, Kind.F, microbatch, step))
                if (stage, Kind.B, microbatch, step) not in seen and not (
                    (stage, Kind.I, microbatch, step) in seen and (stage, Kind.W, microbatch, step) in seen
                ):
                    missing.append(Action(stage, Kind.B, microbatch, step))
    if missing:
        raise TraceError(
            f"the trace lacks {len(missing)} forward or backward action(s) of its schedule "
            f'(first: {missing[0]}); a run that stopped early must say "completed": false in its meta'
        )

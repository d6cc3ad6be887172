"""Read and write traces as JSON, atomically, with one-line errors for bad files.

from traces.io import read_trace, write_trace
write_trace("runs/a/trace.json", trace)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from schedules.fileio import write_atomic
from schedules.ir import ScheduleError, Versioning, parse_action
from traces.schema import (
    FORMAT,
    FORMAT_VERSION,
    SOURCES,
    STREAMS,
    Event,
    ScheduleHeader,
    Trace,
    TraceError,
)

TRACE_NAME = "trace.json"
"""The trace of a run folder."""


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
    """Load a trace; raise TraceError with one line naming the file and the problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise TraceError(f"{path}: cannot read trace ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise TraceError(f"{path}: not JSON (line {error.lineno}: {error.msg})") from None
    try:
        return trace_from_dict(data)
    except TraceError as error:
        raise TraceError(f"{path}: {error}") from None


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
        )
        header.layout  # noqa: B018 - validates the placement
    except (KeyError, TypeError, ValueError) as error:
        raise TraceError(f"bad schedule header ({error})") from None
    events = tuple(_event(index, raw) for index, raw in enumerate(data.get("events", [])))
    return Trace(source=data["source"], schedule=header, events=events, meta=dict(data.get("meta") or {}))


def _event(index: int, raw: Any) -> Event:
    try:
        event = Event(
            rank=int(raw["rank"]),
            action=parse_action(raw["action"]),
            start=float(raw["start"]),
            end=float(raw["end"]),
            stream=str(raw.get("stream", "compute")),
            bytes=int(raw.get("bytes", 0)),
            memory=None if raw.get("memory") is None else int(raw["memory"]),
        )
    except (KeyError, TypeError, ValueError, ScheduleError) as error:
        raise TraceError(f"event {index}: {error}") from None
    if event.stream not in STREAMS:
        raise TraceError(f"event {index}: stream must be one of {STREAMS}, got {event.stream!r}")
    if event.end < event.start:
        raise TraceError(f"event {index}: end {event.end} before start {event.start}")
    return event

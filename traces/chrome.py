"""Export a trace to the Chrome trace event format, which Perfetto (ui.perfetto.dev) opens.

    from traces.chrome import write_chrome
    write_chrome("trace.chrome.json", trace)
    pipesim simulate --schedule 1f1b -p 4 -m 8 --chrome trace.chrome.json

One process per rank; one thread per stream: "compute", "recv", and one "send -> rank d" per directed
link (a link carries one transfer at a time, so its slices never overlap; sends to different ranks can).
Every action is a complete event (ph "X", ts and dur in microseconds) whose args carry the stage,
microbatch, step, weight version, bytes and memory; memory is also a counter track per rank.
"""

from __future__ import annotations

import json
import os
from typing import Any

from schedules.ir import Layout
from schedules.semantics import peer_rank
from traces.io import write_atomic
from traces.schema import Event, Trace

COMPUTE_TID, RECV_TID, SEND_TID_BASE = 0, 1, 2
MICROSECONDS = 1e6


def thread_of(layout: Layout, event: Event) -> tuple[int, str]:
    """(tid, thread name) of an event's stream."""
    if event.stream == "compute":
        return COMPUTE_TID, "compute"
    if event.stream == "recv":
        return RECV_TID, "recv"
    target = peer_rank(layout, event.action)
    if target is None:
        return SEND_TID_BASE + layout.ranks, "send"
    return SEND_TID_BASE + target, f"send -> rank {target}"


def to_chrome(trace: Trace) -> dict[str, Any]:
    """The trace as a Chrome trace object: {"traceEvents": [...], "displayTimeUnit": "ms", ...}."""
    layout = trace.schedule.layout
    threads: dict[tuple[int, int], str] = {}
    slices, counters = [], []
    for event in trace.events:
        tid, thread = thread_of(layout, event)
        threads[(event.rank, tid)] = thread
        slices.append(_slice(event, tid))
        if event.memory is not None:
            moment = event.start if event.stream == "send" else event.end
            counters.append(
                {
                    "name": "memory",
                    "ph": "C",
                    "pid": event.rank,
                    "ts": moment * MICROSECONDS,
                    "args": {"bytes": event.memory},
                }
            )
    counters.sort(key=lambda counter: (counter["pid"], counter["ts"]))
    return {
        "traceEvents": _metadata(trace, threads) + slices + counters,
        "displayTimeUnit": "ms",
        "otherData": {"source": trace.source, "schedule": trace.schedule.name},
    }


def _slice(event: Event, tid: int) -> dict[str, Any]:
    action = event.action
    return {
        "name": str(action),
        "cat": action.kind.value,
        "ph": "X",
        "pid": event.rank,
        "tid": tid,
        "ts": event.start * MICROSECONDS,
        "dur": (event.end - event.start) * MICROSECONDS,
        "args": {
            "stage": action.stage,
            "microbatch": action.microbatch,
            "step": action.step,
            "version": action.version,
            "bytes": event.bytes,
            "memory": event.memory,
        },
    }


def _metadata(trace: Trace, threads: dict[tuple[int, int], str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rank in range(trace.schedule.ranks):
        out.append({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": f"rank {rank}"}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": rank, "args": {"sort_index": rank}})
    for (rank, tid), name in sorted(threads.items()):
        out.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid, "args": {"name": name}})
        out.append(
            {"name": "thread_sort_index", "ph": "M", "pid": rank, "tid": tid, "args": {"sort_index": tid}}
        )
    return out


def write_chrome(path: str | os.PathLike, trace: Trace) -> None:
    """Write the Chrome trace JSON atomically (same trace, same bytes)."""
    write_atomic(path, json.dumps(to_chrome(trace), separators=(",", ":")) + "\n")

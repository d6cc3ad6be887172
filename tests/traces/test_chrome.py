"""Chrome trace export: what Perfetto needs (complete events in microseconds, properly nested per thread).

.venv/bin/pytest tests/traces/test_chrome.py -q
"""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from schedules import build
from simulator import CostModel, simulate
from traces.chrome import to_chrome, write_chrome

COSTS = CostModel.uniform(latency=0.4, bandwidth=10.0, activation_bytes=8, weight_bytes=12, stash_bytes=3)


@pytest.fixture(scope="module")
def amdp_trace():
    return simulate(build("amdp", 4, 8, 2), COSTS).trace()


def test_one_process_per_rank_one_thread_per_stream(amdp_trace) -> None:
    events = to_chrome(amdp_trace)["traceEvents"]
    processes = {
        e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"
    }
    assert processes == {rank: f"rank {rank}" for rank in range(4)}
    threads = {(e["pid"], e["args"]["name"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(0, "compute"), (0, "recv")} <= threads
    # AMDP P=4: rank 0 holds pipeline 0's depth 0 (activations to rank 1, weights to its replica on
    # rank 3) and pipeline 1's depth 3 (gradients back to rank 1, its gradient to the owner on rank 3)
    sends = {name for pid, name in threads if pid == 0 and name.startswith("send")}
    assert sends == {"send -> rank 1", "send -> rank 3"}


def test_every_action_is_a_complete_event_in_microseconds(amdp_trace) -> None:
    slices = [e for e in to_chrome(amdp_trace)["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == len(amdp_trace.events)
    for chrome, event in zip(slices, amdp_trace.events, strict=True):
        assert chrome["name"] == str(event.action) and chrome["pid"] == event.rank
        assert chrome["ts"] == event.start * 1e6 and chrome["dur"] == pytest.approx(event.duration * 1e6)
        assert chrome["args"]["version"] == event.action.version and chrome["args"]["memory"] == event.memory


def test_slices_never_cross_on_a_thread(amdp_trace) -> None:
    # Perfetto nests complete events on one thread; two that partly overlap would be misdrawn.
    by_thread = defaultdict(list)
    for e in to_chrome(amdp_trace)["traceEvents"]:
        if e["ph"] == "X":
            by_thread[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_thread.values():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end - 1e-6


def test_memory_is_a_counter_track(amdp_trace) -> None:
    counters = [e for e in to_chrome(amdp_trace)["traceEvents"] if e["ph"] == "C"]
    assert {e["pid"] for e in counters} == {0, 1, 2, 3}
    assert max(e["args"]["bytes"] for e in counters) == max(event.memory for event in amdp_trace.events)


def test_written_file_is_json_and_stable(tmp_path: Path, amdp_trace) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_chrome(first, amdp_trace)
    write_chrome(second, simulate(build("amdp", 4, 8, 2), COSTS).trace())
    assert first.read_bytes() == second.read_bytes()
    data = json.loads(first.read_text())
    assert data["displayTimeUnit"] == "ms" and data["otherData"]["schedule"] == "amdp"

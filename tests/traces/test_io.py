"""Traces round-trip through JSON byte for byte; bad files get one line naming the file and the problem.

.venv/bin/pytest tests/traces/test_io.py -q
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from schedules import build
from simulator import CostModel, simulate
from traces.io import dumps_trace, read_trace, trace_to_dict, write_trace
from traces.schema import FORMAT_VERSION, Event, TraceError


@pytest.fixture(scope="module")
def trace():
    costs = CostModel.uniform(
        latency=0.1,
        bandwidth=100.0,
        activation_bytes=5,
        weight_bytes=7,
        jitter="normal",
        jitter_sigma=0.1,
        seed=2,
    )
    return simulate(build("pipedream", 3, 4, 2), costs).trace()


def test_round_trip_is_exact(tmp_path: Path, trace) -> None:
    path = tmp_path / "trace.json"
    write_trace(path, trace)
    loaded = read_trace(path)
    assert loaded == trace
    assert dumps_trace(loaded) == path.read_text()
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION == 1


def test_events_are_sorted_by_start_rank_position(trace) -> None:
    keys = [(event.start, event.rank) for event in trace.events]
    assert keys == sorted(keys)
    assert {event.stream for event in trace.events} == {"compute", "send", "recv"}
    assert trace.meta["workload"] == {"microbatch_size": 1, "sequence_length": 1, "data_parallel": 1}
    assert trace.meta["cost_model"]["bandwidth"] == 100.0 and trace.meta["seed"] == 2


def corrupt(tmp_path: Path, trace, change) -> Path:
    data = trace_to_dict(trace)
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "not a pipesim trace"),
        (lambda d: d.update(format_version=2), "trace format_version 2, this pipesim reads 1"),
        (lambda d: d.update(source="guessed"), "source must be one of"),
        (lambda d: d["events"][0].update(stream="gpu"), "event 0: stream must be one of"),
        (lambda d: d["events"][3].update(end=-1.0), "event 3: end -1.0 before start"),
        (lambda d: d["events"][1].update(action="0X1"), "event 1: malformed action '0X1'"),
        (lambda d: d["schedule"].update(placement=[0, 1, 9]), "bad schedule header"),
    ],
)
def test_bad_traces_name_the_file_and_the_problem(tmp_path: Path, trace, change, message: str) -> None:
    path = corrupt(tmp_path, trace, change)
    with pytest.raises(TraceError, match=f"bad.json: {message}") as error:
        read_trace(path)
    assert "\n" not in str(error.value)


def test_unreadable_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"missing\.json: cannot read trace"):
        read_trace(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("{not json")
    with pytest.raises(TraceError, match=r"text\.json: not JSON \(line 1: "):
        read_trace(tmp_path / "text.json")
    (tmp_path / "latin.json").write_bytes(b'{"format": "caf\xe9"}')
    with pytest.raises(TraceError, match=r"latin\.json: not JSON \(not UTF-8 text\)"):
        read_trace(tmp_path / "latin.json")


def test_what_orjson_refuses_is_read_as_before(tmp_path: Path, trace) -> None:
    """NaN is not JSON, yet Python's json reads it: such a trace gets the checks' own message."""
    path = corrupt(tmp_path, trace, lambda d: d["events"][2].update(end=float("nan")))
    with pytest.raises(TraceError, match=r"bad\.json: event 2: times must be finite"):
        read_trace(path)


def test_the_fast_events_equal_events_built_the_usual_way(tmp_path: Path, trace) -> None:
    path = tmp_path / "t.json"
    write_trace(path, trace)
    again = read_trace(path)
    assert again.events == trace.events and all(type(event) is Event for event in again.events)
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.events[0].start = 1.0  # still frozen


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, trace, monkeypatch) -> None:
    path = tmp_path / "trace.json"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_trace(path, trace)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]

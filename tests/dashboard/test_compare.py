"""The Compare page through AppTest: two traces, the verdict and tables, bad uploads, calibration.

.venv/bin/python -m pytest -q tests/dashboard/test_compare.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.dashboard.conftest import charts
from traces.compare import compare_traces
from traces.io import read_trace

UPLOAD = "(upload a file)"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and modification time (ns)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def test_a_recording_is_compared_as_pipesim_compare_does(app, runs: Path) -> None:
    test = app("compare")
    assert test.selectbox(key="compare.a").value == "recording/measured.json"
    assert test.selectbox(key="compare.b").value == "recording/predicted.json"
    expected = compare_traces(
        read_trace(runs / "recording" / "measured.json"),
        read_trace(runs / "recording" / "predicted.json"),
        labels=("recording/measured.json", "recording/predicted.json"),
    )
    assert [warning.value for warning in test.warning] == [f"verdict: {expected.verdict()}"]
    summary = test.dataframe[0].value.to_dict("records")
    assert (
        summary[0][""] == "step time"
        and summary[0]["error"] == f"{expected.scalar('step_time').rel_error:+.1%}"
    )
    assert [tab.label for tab in test.tabs] == [
        "summary",
        "per rank",
        "per stage",
        "per kind",
        "action order",
    ]
    timeline = charts(test)["compare-timeline"]
    assert timeline["layout"]["meta"]["rows"] == [["rank 0", "rank 1"], ["rank 0", "rank 1"]]  # stacked


def test_traces_of_different_schedules_compare_on_the_summary_and_overlay(app) -> None:
    test = app("compare", a="1f1b/trace.json", b="2bw/trace.json", mode="overlaid")
    order = test.tabs[-1].text[0].value
    assert (
        order == "action order: not compared (the traces ran different schedules (schedule 1f1b against 2bw))"
    )
    timeline = charts(test)["compare-timeline"]
    offsets = {bar.get("offset") for bar in timeline["data"] if bar["type"] == "bar"}
    assert offsets == {-0.44, 0.02}  # A in the upper half of each row, B in the lower


def test_malformed_uploads_are_one_error_each_and_the_page_keeps_running(app) -> None:
    test = app("compare", b=UPLOAD)
    uploader = test.file_uploader(key="compare.upload.b")
    cases = {
        "cut.json": (b'{"format": "pipesim-trace", "events": [{"rank": 0, "act', "truncated?"),
        "old.json": (
            json.dumps({"format": "pipesim-trace", "format_version": 0}).encode(),
            "format_version 0",
        ),
        "binary.json": (b"\xff\xfe not text", "not a text file"),
    }
    for name, (content, expected) in cases.items():
        uploader = test.file_uploader(key="compare.upload.b")
        uploader.set_value((name, content, "application/json")).run()
        assert [error.value[: len(name)] for error in test.error] == [name], test.error
        assert expected in test.error[0].value
        assert test.title[0].value == "Compare" and not test.exception


def test_calibrating_shows_the_reprediction_and_writes_nothing(app, runs: Path) -> None:
    before = _snapshot(runs)
    test = app("compare", a="1f1b/trace.json", b="recording/predicted.json")
    test.button(key="compare-calibrate").click().run()
    assert len(test.warning) + len(test.success) == 2  # the comparison's verdict, then the calibration's
    assert any(
        value.value.startswith("**B**: `calibrated prediction` (simulated, 1f1b") for value in test.markdown
    )
    assert "calibrated-timeline" in charts(test)
    assert "cost file (calibrated.toml)" in [button.label for button in test.get("download_button")]
    test.run()  # the calibration stays shown on the next rerun
    assert "calibrated-timeline" in charts(test)
    assert _snapshot(runs) == before

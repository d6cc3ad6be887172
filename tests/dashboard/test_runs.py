"""The Runs page through AppTest: run folders side by side, and a run still being written.

.venv/bin/python -m pytest -q tests/dashboard/test_runs.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from dashboard.tables import MISSING
from tests.dashboard.conftest import charts
from tests.dashboard.studydata import write_study


def _names(figure: dict) -> list[str]:
    return [curve["name"] for curve in figure["data"]]


def test_finished_runs_show_their_losses_against_step_and_time(app, runs: Path) -> None:
    test = app("runs")
    table = test.dataframe[0].value.to_dict("records")
    assert [(row["run"], row["status"], row["schedule"], row["steps"]) for row in table] == [
        ("1f1b", "finished", "1f1b", "4 / 4"),
        ("2bw", "finished", "2bw", "6 / 6"),
    ]
    curves = charts(test)["runs-curves"]
    assert _names(curves) == ["1f1b", "1f1b tokens/s", "2bw", "2bw validation", "2bw tokens/s"]
    validation = next(curve for curve in curves["data"] if curve["name"] == "2bw validation")
    assert validation["x"] == [1, 3, 5]  # --val-every 2: steps 1, 3, 5

    test.radio(key="runs.x").set_value("time").run()
    rows = [json.loads(line) for line in (runs / "2bw" / "metrics.jsonl").read_text().splitlines()]
    loss = next(curve for curve in charts(test)["runs-curves"]["data"] if curve["name"] == "2bw")
    assert loss["x"] == [row["time"] for row in rows]
    assert test.query_params["x"] == "time" and test.query_params["runs"] == "1f1b,2bw"


def test_a_run_in_progress_is_followed_and_its_torn_last_line_waits(app, runs: Path) -> None:
    live = runs / "live"
    live.mkdir()
    (live / "config.json").write_text(json.dumps({"config": {"schedule": "1f1b", "stages": 2, "steps": 10}}))
    metrics = live / "metrics.jsonl"
    metrics.write_text('{"step": 0, "loss": 5.5, "time": 0.2, "tokens_per_s": 1000}\n{"step": 1, "lo')
    test = app("runs", runs="live")
    (row,) = test.dataframe[0].value.to_dict("records")
    assert (row["status"], row["steps"]) == ("running", "1 / 10")
    captions = [caption.value for caption in test.caption]
    assert "following live live: refreshed every 2 s" in captions
    assert any("ends mid-line" in caption for caption in captions)

    metrics.write_text(metrics.read_text() + 'ss": 5.1, "time": 0.4, "tokens_per_s": 1100}\n')
    test.run()
    loss = next(curve for curve in charts(test)["runs-curves"]["data"] if curve["name"] == "live")
    assert loss["y"] == [5.5, 5.1]
    assert not any("ends mid-line" in caption.value for caption in test.caption)


def test_an_empty_runs_folder_says_how_to_make_one(app, runs: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPESIM_RUNS", str(tmp_path / "nothing"))
    test = app("runs")
    assert test.info[0].value.startswith(f"No run folders under {tmp_path / 'nothing'}")


def test_every_table_shows_a_missing_value_as_a_dash(app, runs: Path) -> None:
    test = app("runs")
    (row,) = [row for row in test.dataframe[0].value.to_dict("records") if row["run"] == "1f1b"]
    assert math.isnan(row["best val loss"])  # 1f1b ran without validation
    assert test.dataframe[0].proto.placeholder == MISSING  # shown as a dash, not Streamlit's "None"
    write_study(runs / "studies" / "small")
    for page in ("explore", "study", "compare"):  # (sweep has a table only for points that fail)
        tables = app(page).dataframe
        assert tables and all(table.proto.placeholder == MISSING for table in tables), page

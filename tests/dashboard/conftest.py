"""Fixtures of the dashboard tests: copies of small run folders, small traces, an AppTest of the app.

The run folders under data/run-folders come from `pipesim run --schedule 1f1b -p 2 -m 4 --steps 4
--val-every 0` and `--schedule 2bw -p 2 -m 4 --steps 6 --val-every 2` on this project's CPU machine
(config.json, metrics.jsonl, trace.json; "out" rewritten to runs/NAME); recording/ holds the first run's
trace as measured.json and `pipesim calibrate ... --prediction predicted.json` of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data" / "run-folders"
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A fresh copy of the test run folders (so a test that checks nothing is written can check it)."""
    return Path(shutil.copytree(DATA, tmp_path / "runs"))


@pytest.fixture
def app(runs: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """app(page="compare", **query) -> an AppTest of dashboard/app.py that has run that page."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PIPESIM_RUNS", str(runs))

    def start(page: str = "explore", **query: str):
        test = AppTest.from_file(str(APP), default_timeout=60)
        test.switch_page(f"views/{page}.py")
        test.query_params.update(query)
        test.run()
        assert not test.exception, [item.value for item in test.exception]
        return test

    return start


def charts(test) -> dict[str, dict]:
    """The plotly figures an AppTest shows (their JSON), by the key they were drawn with (Streamlit's
    element id is "$$ID-<hash>-<key>")."""
    import json

    return {
        element.proto.id.split("-", 2)[2]: json.loads(element.proto.spec)
        for element in test.get("plotly_chart")
    }

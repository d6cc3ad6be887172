"""The Study page through AppTest: a finished synthetic study, its filters, one in progress, and folders
that are not studies.

.venv/bin/python -m pytest -q tests/dashboard/test_study.py
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.studies import read_study, typed
from tests.dashboard.conftest import charts
from tests.dashboard.studydata import CPU_STEP_TIME, STEP_TIME, write_study

ROOT = Path(__file__).resolve().parents[2]


def _summary(path: Path) -> list[dict]:
    with (path / "summary.csv").open() as handle:
        return [{key: typed(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _panel(figure: dict, title: str, name: str) -> dict:
    """The trace called `name` in the panel titled `title` (plotly names a panel's axes x2, y2, ...)."""
    titles = [annotation["text"] for annotation in figure["layout"]["annotations"]]
    axis = "x" if titles.index(title) == 0 else f"x{titles.index(title) + 1}"
    return next(
        trace for trace in figure["data"] if trace["name"] == name and trace.get("xaxis", "x") == axis
    )


def test_a_finished_study_shows_its_summary_target_lrs_plots_and_downloads(app, runs: Path) -> None:
    study = write_study(runs / "studies" / "small").path
    test = app("study")
    assert test.query_params["study"] == "studies/small"  # found two levels down, named in the URL
    table = test.dataframe[0].value.to_dict("records")
    expected = _summary(study)
    assert len(table) == len(expected) == 16 and "lr x" not in table[0]  # no lr probe: no lr scale column
    assert [row["gap"] for row in table] == [row["gap_mean"] for row in expected]
    two_bw = next(row for row in table if (row["schedule"], row["optimizer"], row["P"]) == ("2bw", "muon", 2))
    assert (two_bw["verdict"], two_bw["(spread)"]) == ("no gap", pytest.approx(0.02 / 2**0.5))
    late = next(
        row for row in table if (row["schedule"], row["lr rule"], row["P"]) == ("pipedream", "per-token", 4)
    )
    assert late["reached"] == "0/2"  # never reached: no steps or time (None, NaN in the frame)
    assert math.isnan(late["steps to target"]) and math.isnan(late["time, predicted"])
    # 1f1b with adamw at P = 2: the target 2.7005 (its mean at step 4) is reached after 4 steps by seed 0
    # (2.700) and after 6 by seed 1 (2.701): 5 on average
    first = table[0]
    assert first["steps to target"] == 5.0
    assert first["time, predicted"] == pytest.approx(5 * STEP_TIME["1f1b"])
    assert first["time, this CPU"] == pytest.approx(5 * CPU_STEP_TIME)
    assert any("Target validation loss 2.7005" in item.value for item in test.markdown)
    lrs = test.dataframe[1].value.to_dict("records")
    assert [(row["optimizer"], row["lr"]) for row in lrs] == [("adamw", 1e-3), ("muon", 2e-2)]

    figures = charts(test)
    assert set(figures) == {"study-loss_vs_step", "study-loss_vs_time", "study-gap_vs_depth"}
    steps = figures["study-loss_vs_step"]
    titles = [annotation["text"] for annotation in steps["layout"]["annotations"]]
    assert titles == ["adamw, P = 2", "adamw, P = 4", "muon, P = 2", "muon, P = 4"]
    adamw = _panel(steps, "adamw, P = 2", "2bw")  # mean over seeds 0 and 1 of 3.0 - 0.1 k + 0.04 + 0.03 s
    assert adamw["x"] == [2, 4, 6]
    assert adamw["y"] == pytest.approx([2.9 + 0.0555 - 0.2 * k for k in range(3)])
    time = _panel(figures["study-loss_vs_time"], "adamw, P = 2", "2bw")
    assert time["x"] == pytest.approx([2 * STEP_TIME["2bw"], 4 * STEP_TIME["2bw"], 6 * STEP_TIME["2bw"]])
    gaps = [trace for trace in figures["study-gap_vs_depth"]["data"] if trace["name"] == "pipedream"]
    assert [trace["x"] for trace in gaps] == [[2, 4], [2, 4]]  # a panel per optimizer
    assert gaps[0]["y"] == pytest.approx([0.02, 0.04])  # PipeDream's gap grows with depth

    labels = [button.proto.label for button in test.get("download_button")]
    assert labels == ["results.csv (one row per run)", "summary.csv (one row per cell)"]


def test_filters_narrow_the_table_and_the_plots_and_go_into_the_url(app, runs: Path) -> None:
    write_study(runs / "small")
    test = app("study", optimizers="muon", depths="4", schedules="2bw")
    table = test.dataframe[0].value.to_dict("records")
    assert [(row["schedule"], row["optimizer"], row["P"]) for row in table] == [("2bw", "muon", 4)]
    figures = charts(test)
    titles = [annotation["text"] for annotation in figures["study-loss_vs_step"]["layout"]["annotations"]]
    assert titles == ["muon, P = 4"]
    names = {trace["name"] for trace in figures["study-loss_vs_step"]["data"]}
    assert names == {"1f1b", "2bw"}  # the reference is always drawn

    test.multiselect(key="study.optimizers").set_value(["adamw", "muon"]).run()
    assert len(test.dataframe[0].value) == 2
    assert dict(test.query_params) == {
        "study": "small",
        "schedules": "2bw",
        "optimizers": "adamw,muon",
        "depths": "4",
    }


def test_a_study_in_progress_shows_its_finished_runs(app, runs: Path) -> None:
    write_study(runs / "half", finished=False)
    test = app("study")
    (info,) = [item.value for item in test.info]
    assert info.startswith("In progress: 12 of 24 runs have finished")
    finished = test.dataframe[-1].value.to_dict("records")
    assert len(finished) == 12 and finished[0]["run"] == "1f1b-adamw-p2-s0"
    assert finished[0]["final_val_loss"] == pytest.approx(2.5)
    assert not test.get("plotly_chart") and not test.get("download_button")
    test.multiselect(key="study.optimizers").set_value(["muon"]).run()
    assert {row["variant"] for row in test.dataframe[-1].value.to_dict("records")} == {"muon"}
    assert len(test.dataframe[-1].value) == 5  # seed 0's four muon runs at P = 2, then seed 1's 1f1b


def test_a_missing_run_file_keeps_the_tables_and_says_why_there_are_no_plots(app, runs: Path) -> None:
    study = write_study(runs / "small").path
    (study / "runs" / "2bw-muon-p2-s1.jsonl").unlink()
    test = app("study")
    (error,) = [item.value for item in test.error]
    assert error.startswith(f"{study / 'runs' / '2bw-muon-p2-s1.jsonl'}: not a study run file")
    assert len(test.dataframe[0].value) == 16 and not test.get("plotly_chart")
    assert len(test.get("download_button")) == 2


def test_folders_that_are_not_finished_studies_say_so(app, runs: Path, tmp_path: Path) -> None:
    test = app("study", path=str(runs / "1f1b"))  # a run folder, not a study
    assert test.warning[0].value.startswith(f"{runs / '1f1b'} is not a study folder: it has no study.json")
    test = app("study", path=str(tmp_path / "nowhere"))
    assert test.warning[0].value == f"no folder {tmp_path / 'nowhere'}"

    sweeping = write_study(runs / "sweeping", finished=False).path
    for path in (sweeping / "runs").iterdir():
        path.unlink()
    test = app("study")
    assert test.info[0].value.startswith("In progress: none of the 24 runs has finished yet")
    assert read_study(sweeping).status == "empty"


def test_without_studies_the_page_says_how_to_make_one(app, runs: Path) -> None:
    test = app("study")
    assert test.info[0].value.startswith(f"No study folders under {runs}")
    (runs / "broken").mkdir()
    (runs / "broken" / "study.json").write_text(json.dumps({"format": 1}))
    test = app("study")
    assert test.warning[0].value == f'{runs / "broken" / "study.json"}: no "study" object'


def test_the_page_and_a_folder_read_without_torch(tmp_path: Path) -> None:
    """Only the analysis of the runs imports the executor's grid (and torch): the dashboard starts, and
    a study folder is found and read, without it."""
    folder = write_study(tmp_path / "half", finished=False).path
    code = (
        "import sys; from pathlib import Path; import dashboard.loaders, dashboard.views.study; "
        "from dashboard.studies import find_studies, read_study; "
        f"(found,) = find_studies(Path({str(tmp_path)!r})); state = read_study(found); "
        "print(state.status, len(state.runs)); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split() == ["in", "progress", "12", "False"]
    assert read_study(folder).status == "in progress"


def test_the_committed_paper_study_shows_every_cell(app, runs: Path) -> None:
    """docs/study/paper, as committed, is a study folder this code reads: the table is its summary."""
    shutil.copytree(ROOT / "docs" / "study" / "paper", runs / "paper")
    test = app("study", study="paper")
    table = test.dataframe[0].value.to_dict("records")
    expected = _summary(runs / "paper")
    assert len(table) == len(expected) > 60
    assert [row["gap"] for row in table] == [row["gap_mean"] for row in expected]
    assert any("Target validation loss 2.6426" in item.value for item in test.markdown)

"""`--schedule-file`: a PyTorch CSV wherever a schedule name goes (simulate, sweep, run, schedules import).

.venv/bin/pytest tests/pipesim/test_schedule_file.py -q

The file here is PyTorch's own DualPipeV order for P = 4, m = 8 (V placement, OVERLAP_F_B pairs, mixed B
and I + W), dumped as PyTorch's `_dump_csv` writes it: it must predict exactly what pipesim's dualpipev
predicts, trace, rebuild from its trace, sweep and run, and every way of getting it wrong is one line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipesim.cli import main
from traces.io import read_trace
from traces.schema import schedule_of


@pytest.fixture(scope="module")
def theirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.schedules.test_pytorch_orders import torch_order

    path = tmp_path_factory.mktemp("csv") / "dualpipev.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(torch_order("ScheduleDualPipeV", 4, 2, 8))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_predicts_the_file_as_pipesims_own_and_prints_its_layout(
    capsys: pytest.CaptureFixture[str], theirs: Path, tmp_path: Path
) -> None:
    trace_path = tmp_path / "t.json"
    code, out, err = run(
        capsys,
        "simulate",
        "--schedule-file",
        str(theirs),
        "--schedule",
        "dualpipev",
        "--json",
        "--trace",
        str(trace_path),
    )
    assert code == 0, err
    ours, mine = json.loads(out)
    assert ours["schedule"] == "dualpipev.csv" and mine["schedule"] == "dualpipev"
    assert {key: value for key, value in ours.items() if key != "schedule"} == {
        key: value for key, value in mine.items() if key != "schedule"
    }
    assert "dualpipev.csv: P = 4 ranks, m = 8 microbatches, 8 stages placed in a V" in err
    trace = read_trace(tmp_path / "t.dualpipev.csv.json")
    assert schedule_of(trace.schedule).name == "dualpipev.csv"  # the trace carries its CSV: it rebuilds
    assert trace.schedule.placement == (0, 1, 2, 3, 3, 2, 1, 0)


def test_sweep_takes_the_file_at_its_own_size(
    capsys: pytest.CaptureFixture[str], theirs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep.csv"
    code, _, err = run(
        capsys,
        "sweep",
        "--schedule-file",
        str(theirs),
        "--schedules",
        "zb-v",
        "--out",
        str(out),
        "--jobs",
        "1",
    )
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert [(row["schedule"], row["ranks"], row["microbatches"], row["chunks"]) for row in rows] == [
        ("dualpipev.csv", "4", "8", "2"),
        ("zb-v", "4", "8", "2"),
    ]
    assert float(rows[0]["step_time"]) == 24.5 and not rows[0]["error"]


def test_run_takes_the_file_and_its_sizes(capsys: pytest.CaptureFixture[str], theirs: Path) -> None:
    from pipesim.cli import build_parser
    from pipesim.commands.run import given, make_config

    config = make_config(given(build_parser().parse_args(["run", "--schedule-file", str(theirs)])))
    assert (config.schedule, config.stages, config.microbatches, config.chunks) == ("dualpipev.csv", 4, 8, 2)
    assert config.build_schedule().csv == config.schedule_csv
    assert "placed in a V" in capsys.readouterr().err


# (command and flags, a piece of the one-line message): each way of getting a file wrong
BAD = [
    (["simulate", "--schedule-file", "{missing}"], "cannot read it"),
    (["simulate", "--schedule-file", "{file}", "-p", "2"], "-p 2, but the file has 4"),
    (
        ["simulate", "--schedule-file", "{file}", "--layout", "loop"],
        "--layout loop, but the file places its stages in a V",
    ),
    (
        ["simulate", "-p", "4", "-m", "8"],
        "--schedule NAMES or --schedule-file FILE.csv (or both) is required",
    ),
    (
        ["simulate", "--schedule-file", "{file}", "--cluster", "dgx-a100-80gb"],
        "--schedule-file: not with --cluster",
    ),
    (
        ["simulate", "--schedule-file", "{file}", "--overlap-f-b", "2"],
        "--overlap-f-b: must be between 0 and 1",
    ),
    (
        ["sweep", "--schedule-file", "{file}", "-m", "16", "--out", "{out}"],
        "has -m 8, which -m 16 does not list",
    ),
    (["run", "--schedule-file", "{file}", "--schedule", "1f1b"], "--schedule and --schedule-file: give one"),
    (["run", "--schedule-file", "{file}", "--microbatches", "4"], "-m 4, but the file has 8"),
    (
        ["run", "--schedule-file", "{file}", "--out", "{out}"],
        "8 model pieces, more than the model's 4 layers",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[message for _, message in BAD])
def test_a_bad_file_or_flag_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], theirs: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    names = {"file": str(theirs), "missing": str(tmp_path / "missing.csv"), "out": str(tmp_path / "out")}
    code, out, err = run(capsys, *(arg.format(**names) for arg in argv))
    assert code == 2 and out == ""
    line = err.splitlines()[-1]
    assert line.startswith("pipesim: error: ") and message in line, err
    assert not (tmp_path / "out").exists()

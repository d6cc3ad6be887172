"""`pipesim simulate` and `pipesim sweep`, in-process through pipesim.cli.main (one subprocess check).

.venv/bin/pytest tests/simulator/test_cli.py -q
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipesim.cli import main
from traces.io import read_trace

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_metrics_of_the_issue(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "simulate", "--schedule", "2bw", "-p", "8", "-m", "32", "--json")
    assert (code, err) == (0, "")
    metrics = json.loads(out)
    assert metrics["step_time"] == 96  # steady state: 32 x (1 + 2) s, no bubble
    assert metrics["throughput"] == {
        "samples_per_s": pytest.approx(1 / 3),
        "tokens_per_s": pytest.approx(1 / 3),
    }
    assert metrics["bubble_fraction"] == 0
    assert len(metrics["utilization"]) == 8 and len(metrics["peak_memory"]) == 8
    assert metrics["delay"] == [1] * 8 and metrics["weight_versions"] == [2] * 8
    assert metrics["mismatches"] == [0] * 8 and metrics["costs"] == "unit"


def test_one_schedule_prints_scalars_then_rank_and_stage_tables(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "--schedule", "1f1b", "-p", "4", "-m", "8", "--latency", "0.5")
    assert code == 0
    assert out.startswith("1f1b: P = 4 ranks, m = 8 microbatches, 1 step; costs: unit (latency=0.5)")
    step_time = float(re.search(r"^step time +([\d.]+) s$", out, re.MULTILINE)[1])
    assert step_time > 33  # the 33 s of docs/schedules.md, plus transfers on the critical path
    assert out.index("utilization") < out.index("delay")


def test_many_ranks_get_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "--schedule", "1f1b", "-p", "14", "-m", "14")
    assert code == 0
    lines = out.splitlines()
    header = lines.index("rank  utilization  peak memory")
    assert lines[header + 14].split()[0] == "13"
    assert "stage  delay  weight versions  mismatches  peak activations" in lines


def test_a_comma_list_compares_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "simulate", "--schedule", "gpipe,1f1b,pipedream,2bw,amdp", "-p", "4", "-m", "8"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[2].split() == ["gpipe", "1f1b", "pipedream", "2bw", "amdp"]
    rows = {line[:22].strip(): line[22:].split() for line in lines[3:]}
    assert rows["bubble fraction"][:2] == ["0.2727", "0.2727"]
    assert rows["delay (max)"][:4] == ["0", "0", "3", "1"]
    code, out, _ = run(capsys, "simulate", "--schedule", "gpipe,2bw", "-p", "2", "-m", "2", "--json")
    assert [entry["schedule"] for entry in json.loads(out)] == ["gpipe", "2bw"]


def test_trace_and_chrome_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace, chrome = tmp_path / "t.json", tmp_path / "c.json"
    code, _, _ = run(
        capsys,
        "simulate",
        "--schedule",
        "1f1b",
        "-p",
        "2",
        "-m",
        "4",
        "--trace",
        str(trace),
        "--chrome",
        str(chrome),
    )
    assert code == 0
    loaded = read_trace(trace)
    assert loaded.source == "simulated" and loaded.schedule.name == "1f1b" and loaded.makespan == 15
    assert any(event["ph"] == "X" for event in json.loads(chrome.read_text())["traceEvents"])
    code, _, _ = run(
        capsys, "simulate", "--schedule", "gpipe,1f1b", "-p", "2", "-m", "2", "--trace", str(trace)
    )
    assert read_trace(tmp_path / "t.gpipe.json").schedule.name == "gpipe"
    assert read_trace(tmp_path / "t.1f1b.json").schedule.name == "1f1b"


def test_analytic_presets_and_cost_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "simulate",
        "--schedule",
        "1f1b",
        "-p",
        "2",
        "-m",
        "4",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--json",
    )
    metrics = json.loads(out)
    assert code == 0 and metrics["costs"] == "tiny@cpu"
    assert metrics["throughput"]["tokens_per_s"] == pytest.approx(metrics["throughput"]["samples_per_s"] * 64)
    assert all(peak > 0 for peak in metrics["peak_memory"])
    example = str(ROOT / "simulator/presets/example.toml")
    code, out, _ = run(
        capsys, "simulate", "--schedule", "zb-h1", "-p", "4", "-m", "8", "--costs", example, "--json"
    )
    assert code == 0 and json.loads(out)["memory_capacity"] == 80 * 10**9


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "2bx", "-p", "2", "-m", "2"], "unknown schedule '2bx'"),
        (["--schedule", "2bw", "-p", "4", "-m", "2"], "2bw needs microbatches m >= stages P"),
        (
            ["--schedule", "1f1b", "-p", "2", "-m", "2", "--model", "gpt9", "--device", "cpu"],
            "--model: unknown preset 'gpt9'",
        ),
        (["--schedule", "1f1b", "-p", "2", "-m", "2", "--model", "tiny"], "needs both --model and --device"),
        (["--schedule", "1f1b", "-p", "2", "-m", "2", "--tf", "1 sec"], "--tf: unknown unit 'sec'"),
        (
            ["--schedule", "1f1b", "-p", "2", "-m", "2", "--tf", "-1"],
            "--tf: must be a finite non-negative time",
        ),
        (
            ["--schedule", "1f1b", "-p", "2", "-m", "2", "--bandwidth", "10 GBs"],
            "--bandwidth: unknown unit 'GBs'",
        ),
        (
            ["--schedule", "1f1b", "-p", "2", "-m", "2", "--costs", "nowhere.toml"],
            "nowhere.toml: cannot read",
        ),
        (
            ["--schedule", "1f1b", "-p", "8", "-m", "8", "--model", "tiny", "--device", "cpu"],
            "4 layers, too few for 8",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "simulate", *argv)
    assert (code, out) == (2, "")
    assert err.startswith("pipesim: error: ") and message in err and err.count("\n") == 1


def test_a_cost_file_missing_a_stage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "costs.toml"
    path.write_text("[stages.0]\nforward = 1\n[stages.1]\nforward = 2\n")
    code, _, err = run(capsys, "simulate", "--schedule", "1f1b", "-p", "3", "-m", "3", "--costs", str(path))
    assert code == 2 and "costs.toml: cost model has 2 stages, the schedule needs 3" in err


def test_sweep_writes_the_whole_grid_in_order(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "sweep.csv"
    code, _, err = run(
        capsys, "sweep", "--schedules", "1f1b,2bw", "-p", "2,4", "-m", "2,8", "--out", str(out), "--jobs", "1"
    )
    assert code == 0 and "sweep [" in err and "8/8" in err and "1 could not run" in err
    rows = list(csv.DictReader(out.open()))
    assert [(r["schedule"], r["ranks"], r["microbatches"]) for r in rows][:3] == [
        ("1f1b", "2", "2"),
        ("1f1b", "2", "8"),
        ("1f1b", "4", "2"),
    ]
    failed = [r for r in rows if r["error"]]
    assert [(r["schedule"], r["ranks"], r["microbatches"]) for r in failed] == [("2bw", "4", "2")]
    assert float(rows[1]["bubble_fraction"]) == pytest.approx(1 / 9)  # 1F1B P=2 m=8: (P-1)/(m+P-1)


def test_sweep_on_a_process_pool_over_devices(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "devices.csv"
    code, _, _ = run(
        capsys,
        "sweep",
        "--schedules",
        "gpipe",
        "-p",
        "2",
        "-m",
        "4",
        "--model",
        "tiny",
        "--device",
        "cpu,h100-sxm",
        "--out",
        str(out),
        "--jobs",
        "2",
    )
    rows = list(csv.DictReader(out.open()))
    assert code == 0 and [r["costs"] for r in rows] == ["tiny@cpu", "tiny@h100-sxm"]
    assert float(rows[0]["step_time"]) > 100 * float(rows[1]["step_time"])
    code, _, err = run(capsys, "sweep", "--schedules", "gpipe", "-p", "2,x", "-m", "4", "--out", str(out))
    assert code == 2 and "-p: expected a comma list of whole numbers" in err


def test_the_installed_command_runs_and_fails_cleanly() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "pipesim", "simulate", "--schedule", "1f1b", "-p", "2", "-m", "2", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["step_time"] == 9
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipesim",
            "simulate",
            "--schedule",
            "1f1b",
            "-p",
            "2",
            "-m",
            "2",
            "--tb",
            "x",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--tb: 'x' is not a number" in bad.stderr

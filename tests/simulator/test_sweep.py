"""The sweep's batches, backends and large points give the rows a one-point-at-a-time sweep gives.

.venv/bin/pytest tests/simulator/test_sweep.py -q
"""

from __future__ import annotations

import io

import pytest

from pipesim.cli import main
from simulator import sweep
from simulator.request import CostRequest
from simulator.sweep import ProgressBar, batches, grid, run_point, run_sweep

POINTS = grid(
    ["1f1b", "2bw", "zb-h1"],
    ranks=[2, 4],
    microbatches=[2, 8, 12],
    requests=[CostRequest(overrides={"latency": 0.1})],
)
"""18 points, 2BW at m = 2 < P = 4 among them (an error row)."""


def test_batches_keep_every_point_in_order() -> None:
    for jobs in (1, 2, 3, 64):
        parts = batches(POINTS, jobs)
        assert [point for part in parts for point in part] == POINTS
        assert len(parts) <= max(1, 8 * jobs)


def test_the_process_pool_gives_the_rows_of_one_point_at_a_time() -> None:
    done: list[int] = []
    expected = [run_point(point) for point in POINTS]
    assert run_sweep(POINTS, jobs=2, progress=done.append) == expected
    assert sum(done) == len(POINTS) and any(row["error"] for row in expected)


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_same_rows() -> None:
    done: list[int] = []
    assert run_sweep(POINTS, jobs=2, progress=done.append, backend="dask") == run_sweep(POINTS)
    assert sum(done) == len(POINTS)


def test_a_large_point_runs_on_columns_with_the_same_metrics(monkeypatch) -> None:
    point = POINTS[4]  # 1f1b, P = 4, m = 8
    small = run_point(point)
    monkeypatch.setattr(sweep, "LARGE", 1)
    assert run_point(point) == small


def test_the_progress_bar_prints_each_tenth_once_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(40, stream=stream)
    for done in (3, 1, 9, 27):
        bar(done)
    lines = stream.getvalue().splitlines()
    assert [line.split()[-1] for line in lines] == ["4/40", "13/40", "40/40"]


def test_the_sweep_reports_its_rate_and_refuses_a_scheduler_without_dask(capsys, tmp_path) -> None:
    out = str(tmp_path / "s.csv")
    assert main(["sweep", "--schedules", "1f1b", "-p", "2", "-m", "4,8", "--out", out, "--jobs", "1"]) == 0
    assert "points/s, 1 worker" in capsys.readouterr().err
    flags = ["sweep", "--schedules", "1f1b", "-p", "2", "-m", "4", "--out", out, "--scheduler", "tcp://x:1"]
    assert main(flags) == 2
    assert "--scheduler is the address of a Dask cluster" in capsys.readouterr().err

"""The study's building blocks: the grid's fairness rules, the folder, the analysis, the pool, one run.

Run: .venv/bin/pytest tests/executor/test_study.py

The end-to-end check of `pipesim study --preset quick` (every cell ran, numbers finite, the reference
equals plain training, a second invocation recomputes nothing) is tests/pipesim/test_study.py.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from executor.errors import ExecutorConfigError
from executor.study.analysis import (
    COLUMNS,
    find_target,
    iters_to,
    result_rows,
    summary_rows,
    target_step,
    verdict,
)
from executor.study.figures import study_figures
from executor.study.grid import Cell, StudyConfig, cells, depth_free, run_config, runs, source
from executor.study.pool import run_tasks
from executor.study.presets import paper, quick
from executor.study.report import cell_text, csv_text, markdown_table
from executor.study.store import RunRecord, StudyFolder, first_difference
from executor.study.sweep import best, extension, initial_grid, sweep_cell
from executor.study.train import Curve, train
from executor.training.optim import OptimizerConfig
from tests.executor.pool_tasks import slow_square

ROOT = Path(__file__).resolve().parents[2]

# --- the grid ---------------------------------------------------------------------------------------


def test_paper_grid_runs_corrections_only_where_they_act_and_both_lr_rules_for_pipedream() -> None:
    grid = cells(paper())
    names = [cell.name for cell in grid]
    assert len(names) == len(set(names))
    by_schedule = {
        s: {(c.variant, c.lr_rule) for c in grid if c.schedule == s and c.lr_scale == 1.0}
        for s in ("1f1b", "2bw")
    }
    assert by_schedule["1f1b"] == {(v, "both") for v in ("adamw", "nadamw", "muon", "basis-rotation")}
    assert ("adamw+delay", "both") in by_schedule["2bw"] and ("adamw+pipemare", "both") not in by_schedule[
        "2bw"
    ]
    pipedream = {(c.variant, c.lr_rule) for c in grid if c.schedule == "pipedream"}
    assert ("adamw+pipemare", "per-token") in pipedream and ("adamw+delay", "per-update") not in pipedream
    assert {c.variant for c in grid if c.schedule == "amdp"} == {"adamw", "nadamw", "muon", "basis-rotation"}
    probe = {(c.schedule, c.variant) for c in grid if c.lr_scale != 1.0}
    assert probe == {(s, v) for s in ("1f1b", "2bw") for v in ("adamw", "muon")}  # the reference is added
    assert len(grid) == 3 * 3 * (4 + 10 + 6 + 4 + 4)  # depths x seeds x (1f1b, pipedream, 2bw, amdp, probe)


def test_depth_free_schedules_run_once_at_the_smallest_depth() -> None:
    study = paper()
    assert [depth_free(study, s) for s in study.schedules] == [True, False, True, False]
    cell = Cell(schedule="2bw", variant="muon", stages=8, seed=1)
    assert source(study, cell) == dataclasses.replace(cell, stages=2)
    assert source(study, dataclasses.replace(cell, schedule="amdp")).stages == 8
    assert len(runs(study)) == 3 * (4 + 30 + 6 + 12 + 4)  # seeds x (1f1b, pipedream, 2bw, amdp, probe)
    clipped = dataclasses.replace(study, optimizer=OptimizerConfig(grad_clip=1.0))
    assert not depth_free(clipped, "2bw") and depth_free(clipped, "1f1b")  # 2BW clips per stage


def test_pipedream_per_token_rule_divides_lr_and_counts_the_schedule_in_updates() -> None:
    study = paper()
    sync = run_config(study, Cell(schedule="1f1b", variant="adamw", stages=4, seed=0), 3e-3)
    per_token = Cell(schedule="pipedream", variant="adamw+pipemare", stages=4, seed=0, lr_rule="per-token")
    token = run_config(study, per_token, 3e-3)
    update = run_config(study, dataclasses.replace(per_token, lr_rule="per-update"), 3e-3)
    m = study.microbatches
    assert (sync.optimizer.lr, update.optimizer.lr, token.optimizer.lr) == (
        3e-3,
        3e-3,
        pytest.approx(3e-3 / m),
    )
    assert (sync.optimizer.warmup_steps, token.optimizer.warmup_steps) == (10, 10 * m)
    assert (sync.optimizer.total_steps, token.optimizer.total_steps) == (200, 200 * m)
    assert token.optimizer.pipemare_steps == 50 * m and token.optimizer.correction == "pipemare"
    same = ("steps", "microbatches", "microbatch_size", "seed", "data", "model", "layers")
    assert [getattr(sync, f) for f in same] == [getattr(token, f) for f in same]  # equal tokens


def test_sweep_runs_the_reference_at_the_smallest_depth_and_first_seed() -> None:
    study = dataclasses.replace(quick(), lrs={"muon": 1e-2})
    assert initial_grid(study) == {
        "adamw": [1e-3, 3e-3],
        "nadamw": [1e-3, 3e-3],
        "basis-rotation": [1e-3, 3e-3],
    }
    cell = sweep_cell(study, "adamw")
    assert (cell.schedule, cell.stages, cell.seed) == ("1f1b", 2, 0)


@pytest.mark.parametrize(
    ("results", "chosen", "beyond"),
    [
        ({1e-3: 2.6, 3e-3: 2.5, 1e-2: 2.7}, 3e-3, None),  # the best inside the grid: done
        ({1e-3: 2.6, 3e-3: 2.7, 1e-2: 2.9}, 1e-3, 3e-4),  # at the low edge: look below
        ({3e-3: 2.3, 1e-2: 2.0, 3e-2: 1.9}, 3e-2, 1e-1),  # at the high edge: look above
        ({1e-2: 2.0, 3e-2: None}, 1e-2, 3e-3),  # diverged counts as worst: 1e-2 is the low edge
        ({1e-3: 2.0, 3e-3: 2.0}, 1e-3, 3e-4),  # a tie goes to the smaller lr
        ({1e-3: 2.0}, 1e-3, None),  # one lr is a given lr, not a sweep
    ],
)
def test_the_sweep_picks_the_lowest_loss_and_looks_past_an_edge(results, chosen, beyond) -> None:
    assert best(results) == chosen and extension(results) == beyond


# --- one run ----------------------------------------------------------------------------------------

TINY = StudyConfig(
    schedules=("1f1b", "2bw"), variants=("adamw",), depths=(2, 4), seeds=(0,), steps=4, microbatches=4,
    microbatch_size=2, layers=4, hidden=32, seq_len=32, val_every=2, val_microbatches=1, warmup_steps=1,
)  # fmt: skip


@pytest.mark.parametrize("schedule", ["1f1b", "2bw"])
def test_depth_free_runs_are_bit_identical_at_every_depth(schedule) -> None:
    curves = [
        train(run_config(TINY, Cell(schedule=schedule, variant="adamw", stages=p, seed=0), 3e-3))
        for p in (2, 4)
    ]
    assert curves[0].losses == curves[1].losses and curves[0].vals == curves[1].vals
    assert len(curves[0].losses) == 4 and [step for step, _ in curves[0].vals] == [1, 3]


def test_a_diverging_run_stops_and_leaves_no_final_loss(tmp_path: Path) -> None:
    study = dataclasses.replace(TINY, optimizer=OptimizerConfig(name="sgd"), variants=("sgd",))
    curve = train(run_config(study, Cell(schedule="1f1b", variant="sgd", stages=2, seed=0), 1e6))
    assert curve.diverged_at is not None and len(curve.losses) == curve.diverged_at
    path = tmp_path / "run.jsonl"
    StudyFolder.write_run(path, {"name": "x", "config": {}}, curve)
    assert StudyFolder.read_run(path).end["final_val_loss"] is None


# --- the folder -------------------------------------------------------------------------------------

CURVE = Curve(losses=(3.0, 2.5, 2.0), vals=((1, 2.7), (2, 2.2)), wall_s=1.25)


def test_run_files_round_trip_and_refuse_other_settings(tmp_path: Path) -> None:
    folder = StudyFolder(tmp_path)
    path = folder.run_path("1f1b-adamw-p2-s0")
    folder.write_run(path, {"name": "1f1b-adamw-p2-s0", "config": {"lr": 0.003}}, CURVE)
    record = folder.read_run(path)
    assert [line["loss"] for line in record.steps] == [3.0, 2.5, 2.0]
    assert record.vals() == [(1, 2.7), (2, 2.2)]
    assert (record.end["final_val_loss"], record.end["best_val_loss"]) == (2.2, 2.2)
    assert folder.finished(path, {"lr": 0.003}) and not folder.finished(folder.run_path("other"), {})
    with pytest.raises(ExecutorConfigError, match=r"lr: 0.003 there, 0.01 here"):
        folder.finished(path, {"lr": 0.01})


def test_a_study_folder_keeps_its_settings_and_drops_torn_writes(tmp_path: Path) -> None:
    folder = StudyFolder(tmp_path / "s")
    folder.claim({"study": quick().to_dict()})
    folder.claim({"study": quick().to_dict()})  # the same settings: fine
    with pytest.raises(ExecutorConfigError, match=r"holds a study with other settings \(steps: 12 there, 13"):
        folder.claim({"study": dataclasses.replace(quick(), steps=13).to_dict()})
    torn = folder.path / "runs" / ".x.jsonl.123.tmp"
    torn.parent.mkdir(parents=True)
    torn.write_text("{", encoding="utf-8")
    assert folder.remove_leftovers() == 1 and not torn.exists()
    assert StudyConfig.from_dict(quick().to_dict()) == quick()


def test_first_difference_names_the_nested_field() -> None:
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 2}}, "") == "a.b: 1 there, 2 here"
    assert first_difference({"a": [1, 2]}, {"a": [1, 2]}, "") == ""


# --- the analysis -----------------------------------------------------------------------------------


def test_iterations_to_target_count_steps_done_at_the_first_validation_at_or_below() -> None:
    vals = [(9, 3.0), (19, 2.5), (29, None), (39, 2.4)]
    assert (iters_to(vals, 2.5), iters_to(vals, 2.45), iters_to(vals, 1.0)) == (20, 40, None)
    assert target_step(paper()) == 159  # the last validation within 80% of 200 steps
    assert target_step(quick()) == 7  # validations after steps 4, 8, 12; 80% of 12 is 9.6


@pytest.mark.parametrize(
    ("gaps", "expected"),
    [
        ([0.10, 0.12, 0.11], "worse"),  # a gap larger than its spread over seeds
        ([0.02, -0.01, 0.03], "no gap"),  # mean 0.013 within a spread of 0.021: reads as no gap
        ([-0.20, -0.30], "better"),
        ([0.1, None], "diverged"),  # one seed diverged
        ([0.1], "one seed"),  # no spread to compare with
    ],
)
def test_verdict_reads_a_gap_within_the_seed_spread_as_no_gap(gaps, expected) -> None:
    assert verdict(False, gaps) == expected


def test_summary_pairs_each_seed_with_its_reference() -> None:
    def row(schedule: str, seed: int, final: float, gap: float) -> dict:
        return {
            "schedule": schedule, "optimizer": "adamw", "lr_rule": "both", "lr_scale": 1.0, "stages": 2,
            "seed": seed, "final_val_loss": final, "gap_to_sync": gap, "iters_to_target": 10 + seed,
            "time_to_target_s": 1.0, "cpu_time_to_target_s": 2.0,
        }  # fmt: skip

    # the loss moves 0.2 between seeds; the paired gap moves 0.02: a consistent gap, not noise
    rows = [
        row("1f1b", 0, 2.0, 0.0),
        row("1f1b", 1, 2.2, 0.0),
        row("2bw", 0, 2.04, 0.04),
        row("2bw", 1, 2.26, 0.06),
    ]
    reference, asynchronous = summary_rows(rows, "1f1b")
    assert reference["verdict"] == "reference"
    assert asynchronous["gap_mean"] == pytest.approx(0.05)
    assert asynchronous["seed_spread"] == pytest.approx(0.01414, abs=1e-5)
    assert asynchronous["final_val_loss_std"] == pytest.approx(0.1556, abs=1e-4)
    assert (asynchronous["verdict"], asynchronous["reached"], asynchronous["iters_to_target_mean"]) == (
        "worse",
        "2/2",
        10.5,
    )


# --- the pool ---------------------------------------------------------------------------------------


def test_ctrl_c_terminates_the_workers_and_keeps_what_finished() -> None:
    finished: list[int] = []

    def done(result: int) -> None:
        finished.append(result)
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the first result

    with pytest.raises(KeyboardInterrupt):
        run_tasks([1, 20, 20], slow_square, jobs=2, done=done)
    assert finished == [1] and multiprocessing.active_children() == []


def _pool_in_a_child(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A process running a pool of two workers, once both workers are busy; their pids."""
    env = {**os.environ, "POOL_PIDS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "tests.executor.pool_tasks"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    return child, [int(path.name) for path in tmp_path.iterdir()]


def _gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_ends_the_workers_like_ctrl_c(tmp_path, stop) -> None:
    child, workers = _pool_in_a_child(tmp_path)
    assert len(workers) == 2
    child.send_signal(stop)
    assert child.wait(timeout=30) == 130
    assert _gone(workers, 5)


@pytest.mark.slow
def test_a_stop_signal_stops_a_study_of_one_job_like_ctrl_c(tmp_path) -> None:
    env = {**os.environ, "POOL_PIDS": str(tmp_path), "PYTHONPATH": str(ROOT), "POOL_JOBS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "tests.executor.pool_tasks"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [int(path.name) for path in tmp_path.iterdir()] == [child.pid]  # the task runs in the process
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 130


@pytest.mark.slow
def test_workers_exit_when_the_main_process_is_killed(tmp_path) -> None:
    child, workers = _pool_in_a_child(tmp_path)
    assert len(workers) == 2
    child.kill()  # SIGKILL: no handler runs, the workers are orphaned
    child.wait(timeout=30)
    assert _gone(workers, 5)


def test_tasks_run_in_a_pool_and_report_each_result() -> None:
    results: list[int] = []
    run_tasks([0, 1, 2, 3], slow_square, jobs=2, done=results.append)
    assert sorted(results) == [0, 1, 4, 9]


# --- the figures and tables -------------------------------------------------------------------------


def synthetic_records(study: StudyConfig) -> dict[str, RunRecord]:
    """Every cell's record with a made-up curve: the schedule's index shifts the loss up a little."""
    records = {}
    for cell in cells(study):
        shift = study.schedules.index(cell.schedule) * 0.01 + cell.seed * 0.001
        steps = tuple(
            {
                "step": k,
                "loss": 3.0 - k * 0.1 + shift,
                **({"val_loss": 3.0 - k * 0.1 + shift} if k % 2 else {}),
            }
            for k in range(study.steps)
        )
        end = {"final_val_loss": steps[-1]["val_loss"], "best_val_loss": steps[-1]["val_loss"], "wall_s": 1.0,
               "diverged_at": None}  # fmt: skip
        records[cell.name] = RunRecord(header={"tokens_per_step": 256}, steps=steps, end=end)
    return records


def test_figures_show_a_panel_per_variant_and_depth_and_a_line_per_schedule() -> None:
    study = dataclasses.replace(
        TINY, schedules=("1f1b", "pipedream", "2bw"), variants=("adamw", "adamw+pipemare")
    )
    records = synthetic_records(study)
    target = find_target(study, records)
    times = {(c.schedule, c.stages, c.variant): 0.5 for c in cells(study)}
    rows = result_rows(study, records, {"adamw": 1e-3}, target, times, {})
    summary = summary_rows(rows, study.reference)
    figures = study_figures(study, records, summary, times, "a machine")
    panels = [a.text for a in figures["loss_vs_step"].layout.annotations]
    assert panels == ["adamw, P = 2", "adamw, P = 4", "adamw+pipemare, P = 2", "adamw+pipemare, P = 4"]
    names = {trace.name for trace in figures["loss_vs_step"].data}
    assert names == {"1f1b", "pipedream", "pipedream (lr per token)", "2bw"}
    pipedream = [t for t in figures["gap_vs_depth"].data if t.name == "pipedream"]
    assert [list(t.x) for t in pipedream] == [[2, 4], [2, 4]]  # adamw and adamw+pipemare
    assert list(pipedream[0].y) == pytest.approx([0.01, 0.01])
    time_axis = next(t for t in figures["loss_vs_time"].data if t.name == "2bw")
    assert list(time_axis.x) == pytest.approx([1.0, 2.0])  # steps 2 and 4 done x 0.5 s


def test_tables_are_csv_and_markdown_of_the_same_rows() -> None:
    study = dataclasses.replace(TINY, variants=("adamw",))
    records = synthetic_records(study)
    rows = result_rows(study, records, {"adamw": 1e-3}, find_target(study, records), {}, {})
    text = csv_text(rows, COLUMNS)
    assert text.splitlines()[0] == ",".join(COLUMNS) and len(text.splitlines()) == len(rows) + 1
    table = markdown_table(rows, COLUMNS)
    assert table.count("\n") == len(rows) + 2 and "| 2bw | adamw | both |" in table
    assert cell_text("gap_to_sync", 0.0123) == "+0.0123" and cell_text("time_to_target_s", 90.0) == "1.5 min"

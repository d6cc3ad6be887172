"""`pipesim study`: the quick preset end to end, resuming after Ctrl-C, its flags and its one-line errors.

Run: .venv/bin/pytest tests/pipesim/test_study.py

The quick preset's test checks the machinery, not the science: every cell ran, the numbers are finite,
the synchronous reference equals plain training written here, and a second invocation recomputes
nothing (docs/study/README.md has the paper preset's findings).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from executor.run.runconfig import RunConfig
from executor.study.grid import Cell, cells, run_config, runs
from executor.study.presets import quick
from executor.study.store import StudyFolder
from executor.training.data import load_corpus
from executor.training.model import build_stages, loss_fn
from executor.training.optim import make_optimizer
from pipesim.cli import build_parser, main
from pipesim.commands import study_tasks
from pipesim.commands.study import make_study


def plain_training(config: RunConfig) -> tuple[list[float], dict[int, float]]:
    """One model, one optimizer: mean loss per step over m microbatches, validation after val steps."""
    corpus, seq_len = load_corpus(config.data), config.model_config.seq_len
    (model,) = build_stages(config.model_config, 1, seed=config.seed)
    optimizer = make_optimizer(config.optimizer, model)

    def batch(split: str, step: int, microbatch: int):
        return corpus.batch(split, step=step, microbatch=microbatch, microbatch_size=config.microbatch_size,
                            seq_len=seq_len, seed=config.seed)  # fmt: skip

    losses, vals = [], {}
    for step in range(config.steps):
        step_losses = []
        for j in range(config.microbatches):
            loss = loss_fn(model(batch("train", step, j)[0]), batch("train", step, j)[1])
            (loss / config.microbatches).backward()
            step_losses.append(loss.item())
        optimizer.step(step)
        optimizer.zero_grad()
        losses.append(math.fsum(step_losses) / len(step_losses))
        if step in config.val_steps():
            with torch.no_grad():
                val = [loss_fn(model(batch("val", 0, j)[0]), batch("val", 0, j)[1]).item()
                       for j in range(config.val_microbatches)]  # fmt: skip
            vals[step] = math.fsum(val) / len(val)
    return losses, vals


def finite(value: str) -> bool:
    return value != "" and math.isfinite(float(value))


@pytest.mark.slow
def test_quick_preset_runs_every_cell_once_and_the_reference_is_plain_training(tmp_path, capsys) -> None:
    out = tmp_path / "quick"
    assert main(["study", "--preset", "quick", "--out", str(out), "--jobs", "2", "--no-png"]) == 0
    study, folder = quick(), StudyFolder(out)
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(rows) == len(cells(study))  # a row for every cell: schedules x variants x depths x seeds
    assert all(folder.run_path(cell.name).exists() for cell in runs(study))
    for column in ("final_val_loss", "gap_to_sync", "step_time_s", "cpu_step_time_s"):
        assert all(finite(row[column]) for row in rows), column
    assert {float(row["gap_to_sync"]) for row in rows if row["schedule"] == "1f1b"} == {0.0}
    assert {"summary.md", "summary.csv", "results.md", "lrs.json", "predicted.json"} <= set(
        path.name for path in out.iterdir()
    )
    assert {p.name for p in (out / "plots").glob("*.html")} == {
        "loss_vs_step.html", "loss_vs_time.html", "gap_vs_depth.html",
    }  # fmt: skip

    record = folder.read_run(folder.run_path("1f1b-adamw-p2-s0"))
    losses, vals = plain_training(RunConfig.from_dict(record.header["config"]))
    torch.testing.assert_close([line["loss"] for line in record.steps], losses, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(dict(record.vals()), vals, rtol=1e-5, atol=1e-7)

    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*.json*") if path.parent.name != "plots"}
    results = (out / "results.csv").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["study", "--preset", "quick", "--out", str(out), "--jobs", "2", "--no-png"]) == 0
    assert "(0 tasks ran now" in capsys.readouterr().out
    runs_and_timings = {p: s for p, s in stamps.items() if p.parent.name in ("runs", "sweep", "timing")}
    assert runs_and_timings and all(p.stat().st_mtime_ns == s for p, s in runs_and_timings.items())
    assert (out / "results.csv").read_text(encoding="utf-8") == results


TINY = ["--schedules", "1f1b,2bw", "--optimizers", "adamw", "-p", "2", "--seeds", "0,1", "--steps", "4",
        "--val-every", "2", "--lr", "adamw=3e-3", "--timing-steps", "0", "--no-png",
        "--jobs", "1"]  # fmt: skip


def test_ctrl_c_keeps_finished_runs_and_the_next_invocation_continues(tmp_path, capsys, monkeypatch) -> None:
    out, real_work, calls = tmp_path / "s", study_tasks.work, []

    def work_then_interrupt(task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_work(task)

    monkeypatch.setattr(study_tasks, "work", work_then_interrupt)
    assert main(["study", "--out", str(out), *TINY]) == 130
    assert "the same command continues" in capsys.readouterr().err
    finished = sorted(path.name for path in (out / "runs").iterdir())
    assert len(finished) == 2 and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(study_tasks, "work", real_work)
    assert main(["study", "--out", str(out), *TINY]) == 0
    assert "(2 tasks ran now" in capsys.readouterr().out
    assert len(list((out / "runs").iterdir())) == 4


def test_a_second_study_in_the_same_folder_is_refused(tmp_path, capsys) -> None:
    from executor.run.runfolder import FolderLock

    folder = StudyFolder(tmp_path / "s")
    folder.path.mkdir()
    with FolderLock(folder, "a test"):
        assert main(["study", "--out", str(folder.path), *TINY]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"pipesim: error: {folder.path} is in use by another run (a test, pid ")
    assert len(error.splitlines()) == 1 and not (folder.path / "study.json").exists()


def test_optimizer_flags_reach_every_run_config() -> None:
    args = build_parser().parse_args(
        ["study", "--out", "x", "--betas", "0.8,0.99", "--eps", "1e-6", "--momentum", "0.5",
         "--delay-lambda", "0.25", "--muon-momentum", "0.9", "--nesterov-per-stage", "--weight-decay", "0.1"]
    )  # fmt: skip
    study = make_study(args)
    config = run_config(study, Cell(schedule="2bw", variant="adamw+delay", stages=2, seed=0), 1e-3).optimizer
    assert (config.betas, config.eps, config.momentum, config.delay_lambda) == ((0.8, 0.99), 1e-6, 0.5, 0.25)
    assert (config.muon_momentum, config.nesterov_per_stage, config.weight_decay) == (0.9, True, 0.1)
    assert config.correction == "delay" and study.steps == quick().steps


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--preset", "huge"], "--preset: unknown 'huge'; choose from quick, paper"),
        (["--optimizers", "adamw+magic"], "--optimizers: unknown correction 'magic'"),
        (["--schedules", "2bw,1f1b"], "the first, 2bw, is the reference and must be synchronous"),
        (["--predict-devices", "6"], "--predict-devices 6 is not a multiple of P = 4"),
        (["--lr-rules", "per-byte"], "--lr-rules: unknown 'per-byte'"),
        (["--lr-grid", "adamw=1e-3/x"], "argument --lr-grid: expected NAME=LR, got 'adamw=1e-3/x'"),
        (["--optimizers", "muon", "--lr-grid", "adamw=1e-3"], "--lr or --lr-grid: no learning rate for muon"),
        (["--lr", "adamx=1e-3"], "--lr or --lr-grid: adamx=0.001: not an optimizer, or an lr <= 0"),
        (["-p", "2,8"], "--stages 8"),  # quick's 4-layer model cannot be cut into 8 stages
        (["--steps", "2"], "--total-steps 2 must exceed --warmup-steps 2"),
    ],
)
def test_bad_study_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message) -> None:
    assert main(["study", "--out", str(tmp_path / "s"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_folder_of_another_study_is_refused(tmp_path, capsys) -> None:
    StudyFolder(tmp_path).claim({"study": json.loads(json.dumps(quick().to_dict())) | {"steps": 99}})
    assert main(["study", "--out", str(tmp_path), *TINY]) == 2
    assert "holds a study with other settings" in capsys.readouterr().err


def test_run_takes_the_per_stage_nesterov_switch_and_records_it(tmp_path: Path) -> None:
    from pipesim.commands.run import given, make_config

    args = build_parser().parse_args(
        ["run", "--optimizer", "nadamw", "--nesterov-per-stage", "--momentum", "0"]
    )
    config = make_config(given(args))
    assert config.to_dict()["optimizer"]["nesterov_per_stage"] is True
    assert config.optimizer.momentum == 0.0  # plain SGD is reachable too

"""`pipesim run`: bad input is one line and exit code 2 before anything starts; a run leaves its folder.

Run: .venv/bin/pytest tests/executor/test_cli_run.py
"""

from __future__ import annotations

import json

import pytest

from executor.run.runconfig import RunConfig
from pipesim.cli import main

SMALL = ["--microbatch-size", "2", "--seq-len", "32", "--steps", "4", "--microbatches", "4"]


# Each case: the flags, and a piece of the one-line message that names the problem.
BAD_INPUT = [
    (["--schedule", "nope"], "unknown schedule 'nope'"),
    (["--optimizer", "nope"], "--optimizer: unknown 'nope'"),
    (["--stages", "8"], "--stages 8 is more than the model's 4 layers"),
    (["--schedule", "2bw", "--stages", "4", "--microbatches", "2"], "needs microbatches m >= stages P"),
    (["--data", "/no/such/corpus"], "no such file or folder: /no/such/corpus"),
    (["--split", "1,x"], "--split takes comma-separated block counts"),
    (["--split", "1,1"], "--split 1,1 sums to 2, not 4"),
    (["--val-every", "-1"], "--val-every must be at least 0"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints must be at least 1"),
    # inf and nan compare false with every bound: each float flag is refused, not trained on
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--weight-decay=-inf"], "--weight-decay must be a finite number, got -inf"),
    (["--grad-clip", "nan"], "--grad-clip must be a finite number, got nan"),
    (["--timeout", "inf"], "--timeout must be a positive number of seconds, got inf"),
    (["--timeout", "nan"], "--timeout must be a positive number of seconds, got nan"),
    # interleaved cuts the model into stages x chunks pieces: say so, not "--stages 8"
    (["--schedule", "interleaved", "--stages", "4"], "--stages 4 x --chunks 2 = 8 model pieces, more than"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2_before_any_process(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["run", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipesim: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_resume_refuses_a_folder_of_another_config_or_without_checkpoint(tmp_path, capsys):
    folder = tmp_path / "a"
    assert main(["run", "--schedule", "1f1b", *SMALL, "--out", str(folder), "--prepare"]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(folder), "--schedule", "gpipe"]) == 2
    err = capsys.readouterr().err
    assert "was run with schedule='1f1b', this run has 'gpipe'" in err and err.count("\n") == 1
    assert main(["run", "--resume", str(folder)]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no readable run config.json" in capsys.readouterr().err


def test_prepare_writes_the_config_and_prints_the_torchrun_command(tmp_path, capsys):
    folder = tmp_path / "prepared"
    assert main(["run", "--schedule", "2bw", "--stages", "2", *SMALL, "--out", str(folder), "--prepare"]) == 0
    out = capsys.readouterr().out
    assert "torchrun --nnodes=1 --nproc-per-node=2" in out and f"-m executor.worker --run-dir {folder}" in out
    saved = RunConfig.from_dict(json.loads((folder / "config.json").read_text())["config"])
    assert saved.schedule == "2bw" and saved.steps == 4 and saved.microbatch_size == 2
    assert main(["run", "--schedule", "2bw", *SMALL, "--out", str(folder)]) == 2  # never overwritten
    assert "already holds a run" in capsys.readouterr().err


def test_single_process_run_prints_progress_and_a_summary_and_fills_the_folder(tmp_path, capsys):
    folder = tmp_path / "run"
    flags = ["--schedule", "pipedream", "--stages", "2", *SMALL, "--val-every", "2", "--single-process"]
    assert main(["run", *flags, "--out", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "step 4/4" in captured.err and "tok/s" in captured.err and "val" in captured.err
    assert "first / final loss" in captured.out and "best val loss" in captured.out
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert all({"step", "loss", "tokens_per_s", "time"} <= m.keys() for m in metrics)
    assert [("val_loss" in m) for m in metrics] == [False, True, False, True]
    # One way to count steps everywhere a user reads them: from 1, metrics.jsonl as the progress line
    # and the summary ("step 4/4" is the line {"step": 4}; the best val loss names its line's step).
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert f"step {m['step']}/4  loss {m['loss']:.4f}" in captured.err
    best = min((m["val_loss"], m["step"]) for m in metrics if "val_loss" in m)
    assert f"best val loss       {best[0]:.4f} (step {best[1]})" in captured.out
    trace = json.loads((folder / "trace.json").read_text())
    assert trace["source"] == "measured" and trace["schedule"]["name"] == "pipedream"
    assert {e["action"].split("@")[0][1:2] for e in trace["events"]} >= {"F", "B", "O"}


@pytest.mark.parametrize(
    ("flags", "chunks"),
    [
        (["--schedule", "interleaved"], 2),  # interleaved without --chunks: the registry's default, not 1F1B
        (["--schedule", "interleaved", "--chunks", "3"], 3),  # an explicit value wins
        (["--schedule", "1f1b"], 1),  # schedules without chunks keep one per rank
    ],
)
def test_chunks_default_follows_the_schedule(flags, chunks):
    from pipesim.cli import build_parser
    from pipesim.commands.run import given, make_config

    args = build_parser().parse_args(["run", *flags])
    assert make_config(given(args)).chunks == chunks


def test_resume_refuses_a_run_that_already_finished(tmp_path, capsys):
    # Resuming a finished run would quietly recompute its tail from the last checkpoint.
    folder = tmp_path / "done"
    flags = [*SMALL, "--steps", "2", "--checkpoint-every", "1", "--val-every", "0", "--single-process"]
    assert main(["run", "--schedule", "1f1b", *flags, "--out", str(folder)]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "already finished all 2 steps" in err and err.count("\n") == 1


def test_a_cpu_run_whose_ranks_want_more_cpus_than_the_machine_has_is_warned(monkeypatch):
    from executor.run import cpus

    monkeypatch.setattr(cpus, "available_cpus", lambda: [0, 1])
    text = cpus.crowding(RunConfig(stages=4))
    assert text.startswith("4 ranks x 1 thread(s) want 4 CPUs and this machine has 2: the ranks take turns")
    assert cpus.crowding(RunConfig(stages=2, threads=2)).startswith("2 ranks x 2 thread(s) want 4 CPUs")
    assert cpus.crowding(RunConfig(stages=2)) is None
    assert cpus.crowding(RunConfig(stages=4, single_process=True)) is None  # one process: no claim
    assert cpus.crowding(RunConfig(stages=4, device="cuda")) is None

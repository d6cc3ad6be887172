"""A run stopped with Ctrl-C keeps what ran, and no failed or damaged resume loses any of it (one process).

Run: .venv/bin/pytest tests/executor/test_stop_resume.py        (about 20 s: one real `pipesim run`)

The same story as a user lives it, in order: a single-process run gets SIGINT; a resume on changed data
is refused; `--resume --prepare` touches nothing; a resume from a checkpoint torch cannot read fails while
setting up and leaves the history as it was; with the newest checkpoint truncated, the resume warns,
starts from the one before, and ends with the losses of a run that never stopped and one trace holding
every action once. The distributed side is test_runlife_distributed.py.
"""

from __future__ import annotations

import io
import json
import signal

import pytest

from executor.run.checkpoint_files import complete_checkpoints
from executor.run.launch import launch
from executor.run.runconfig import RunConfig
from executor.run.runfolder import read_metrics
from executor.training.optim import OptimizerConfig
from pipesim.cli import main
from tests.executor.runlife import (
    assert_every_action_that_ran,
    forge,
    snapshot,
    start_pipesim,
    trace_per_rank,
    wait_for_steps,
)

STEPS = 60
FLAGS = ["--schedule", "1f1b", "--stages", "2", "--microbatches", "4", "--microbatch-size", "2"]
FLAGS += ["--seq-len", "32", "--steps", str(STEPS), "--val-every", "5", "--optimizer", "sgd", "--lr", "0.05"]
FLAGS += ["--checkpoint-every", "3", "--keep-checkpoints", "2", "--single-process"]
TEXT = "".join(f"line {i}: a quick brown fox jumps over the lazy dog\n" for i in range(400))


@pytest.mark.slow
def test_a_stopped_run_loses_nothing_through_refused_failed_and_damaged_resumes(tmp_path, capsys):
    data, folder = tmp_path / "data.txt", tmp_path / "run"
    data.write_text(TEXT)
    process = start_pipesim("run", *FLAGS, "--data", str(data), "--out", str(folder))
    wait_for_steps(folder, 8, process)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "pipesim: stopped by SIGINT after step" in err and f"pipesim run --resume {folder}" in err
    schedule = RunConfig(schedule="1f1b", stages=2, microbatches=4, steps=STEPS).build_schedule()
    assert_every_action_that_ran(folder, schedule, complete=False)
    assert trace_per_rank(folder)[0]["stopped_by"] == "SIGINT"
    stopped_at = len(read_metrics(folder / "metrics.jsonl"))
    assert 8 <= stopped_at < STEPS

    # Other data: refused in one line (item 4).
    data.write_text(TEXT + "one more line\n")
    assert main(["run", "--resume", str(folder)]) == 2
    assert "the training data changed since the run started" in capsys.readouterr().err
    data.write_text(TEXT)

    # --resume --prepare deletes (and changes) nothing but config.json (item 2).
    before = snapshot(folder)
    assert main(["run", "--resume", str(folder), "--prepare"]) == 0
    assert snapshot(folder) == before
    capsys.readouterr()

    # A checkpoint intact on disk that torch cannot read: the resume fails while restoring, with the
    # error itself, and the history stays as it was (items 2 and 11).
    newest = complete_checkpoints(folder / "checkpoints", 2)[-1][1]
    original = {name: (newest / name).read_bytes() for name in ("rank1.pt", "rank1.json")}
    forge(newest, 1, b"not a checkpoint")
    metrics, logs = (folder / "metrics.jsonl").read_bytes(), snapshot(folder / "ranks")
    events = trace_per_rank(folder)[1]
    assert main(["run", "--resume", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"rank 1 restoring checkpoint {newest.name}" in err and "Error" in err, err
    assert (folder / "metrics.jsonl").read_bytes() == metrics
    assert trace_per_rank(folder)[1] == events
    for name, text in logs.items():  # the logs only grew
        assert (folder / "ranks" / name).exists() and text
    for name, content in original.items():
        (newest / name).write_bytes(content)

    # The newest checkpoint truncated: skipped with a warning, the one before used (item 3).
    (newest / "rank0.pt").write_bytes((newest / "rank0.pt").read_bytes()[:1000])
    assert main(["run", "--resume", str(folder)]) == 0
    err = capsys.readouterr().err
    assert f"pipesim: warning: checkpoint {newest.name} is damaged (rank0.pt has 1000 bytes" in err
    assert "resuming from the older checkpoint" in err

    reference = RunConfig(
        schedule="1f1b",
        stages=2,
        microbatches=4,
        microbatch_size=2,
        seq_len=32,
        steps=STEPS,
        val_every=5,
        optimizer=OptimizerConfig(name="sgd", lr=0.05),
        data=str(data),
        single_process=True,
        out=str(tmp_path / "reference"),
    )
    assert launch(reference, err=io.StringIO(), out=io.StringIO()) == 0
    ours, theirs = read_metrics(folder / "metrics.jsonl"), read_metrics(tmp_path / "reference/metrics.jsonl")
    assert [(m["step"], m["loss"], m.get("val_loss")) for m in ours] == [
        (m["step"], m["loss"], m.get("val_loss")) for m in theirs
    ]
    assert_every_action_that_ran(folder, schedule, complete=True)
    assert len(list((folder / "checkpoints").iterdir())) == 2  # --keep-checkpoints 2 (item 9)
    assert json.loads((folder / "config.json").read_text())["data"]["digest"]

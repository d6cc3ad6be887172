"""Real ranks under torchrun, treated as people and machines treat them: killed, stopped, frozen, resumed,
and started by hand. Every case ends with no process left and a run folder that holds what ran.

Run: .venv/bin/pytest tests/executor/test_runlife_distributed.py    (about 2 minutes: 7 torchrun starts)
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from executor.run.checkpoint_files import complete_checkpoints
from executor.run.launch import free_port, launch
from executor.run.runconfig import RunConfig
from executor.run.runfolder import read_metrics
from executor.training.optim import OptimizerConfig
from pipesim.cli import main
from schedules import Kind
from tests.executor.runlife import (
    alive,
    assert_every_action_that_ran,
    descendants,
    forge,
    gone_within,
    rank_pids,
    snapshot,
    start_pipesim,
    trace_per_rank,
    wait_for_steps,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

SIZES = dict(schedule="1f1b", stages=2, microbatches=4, microbatch_size=2, seq_len=32, val_every=5)
FLAGS = ["--schedule", "1f1b", "--stages", "2", "--microbatches", "4", "--microbatch-size", "2"]
FLAGS += ["--seq-len", "32", "--val-every", "5", "--optimizer", "sgd", "--lr", "0.05"]


def reference(tmp_path: Path, steps: int) -> list[tuple]:
    """(step, loss, val_loss) of the same run in one process, never stopped."""
    config = RunConfig(
        **SIZES,
        steps=steps,
        optimizer=OptimizerConfig(name="sgd", lr=0.05),
        single_process=True,
        out=str(tmp_path / "reference"),
    )
    assert launch(config, err=io.StringIO(), out=io.StringIO()) == 0
    return [
        (m["step"], m["loss"], m.get("val_loss")) for m in read_metrics(tmp_path / "reference/metrics.jsonl")
    ]


def losses(folder: Path) -> list[tuple]:
    return [(m["step"], m["loss"], m.get("val_loss")) for m in read_metrics(folder / "metrics.jsonl")]


def test_killed_stopped_and_failed_runs_leave_nothing_running_and_resume_to_one_run(tmp_path, capsys):
    steps, folder = 50, tmp_path / "run"
    flags = [*FLAGS, "--steps", str(steps), "--checkpoint-every", "3", "--keep-checkpoints", "2"]
    schedule = RunConfig(**SIZES, steps=steps).build_schedule()

    # 1. SIGKILL of pipesim run's process group: the ranks notice their launcher is gone and end.
    process = start_pipesim("run", *flags, "--timeout", "20", "--out", str(folder))
    wait_for_steps(folder, 7, process)
    tree = descendants(process.pid)  # torchrun (its own session) and the ranks (theirs)
    os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: a zombie for now, as under a busy parent
    assert len(tree) >= 3 and gone_within(tree, 5), [pid for pid in tree if alive(pid)]
    process.communicate()
    assert main(["collect", str(folder)]) == 0  # what the launcher could not write any more
    assert "actions in trace.json (not completed)" in capsys.readouterr().out
    assert_every_action_that_ran(folder, schedule, complete=False)
    killed_at = len(read_metrics(folder / "metrics.jsonl"))

    # 2. A resume; the folder is locked meanwhile; SIGTERM ends every process and leaves the trace.
    process = start_pipesim("run", "--resume", str(folder))
    wait_for_steps(folder, killed_at + 2, process)
    assert main(["run", "--resume", str(folder)]) == 2
    assert f"{folder} is in use by another run (pipesim run, pid {process.pid})" in capsys.readouterr().err
    tree = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and gone_within(tree, 5)
    assert_every_action_that_ran(folder, schedule, complete=False)  # both segments, merged
    assert trace_per_rank(folder)[0]["stopped_by"] == "SIGTERM"

    # 3. A checkpoint torch cannot read: the rank says so itself, and the history stays as it was.
    newest = complete_checkpoints(folder / "checkpoints", 2)[-1][1]
    original = {name: (newest / name).read_bytes() for name in ("rank1.pt", "rank1.json")}
    forge(newest, 1, b"not a checkpoint")
    metrics, events = (folder / "metrics.jsonl").read_bytes(), trace_per_rank(folder)[1]
    assert main(["run", "--resume", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"rank 1 failed while setting up: restoring checkpoint {newest.name}: " in err, err
    assert "crashed or killed" not in err
    assert (folder / "metrics.jsonl").read_bytes() == metrics and trace_per_rank(folder)[1] == events
    for name, content in original.items():
        (newest / name).write_bytes(content)

    # 4. The last resume: the losses of a run that never stopped, one trace of every action, completed.
    assert main(["run", "--resume", str(folder)]) == 0
    assert losses(folder) == reference(tmp_path, steps)
    assert_every_action_that_ran(folder, schedule, complete=True)
    assert len(rank_pids(folder)) == 2 * 4  # four segments per rank log, none deleted


def test_a_frozen_rank_is_named_stalled_and_every_process_ends_within_the_timeout(tmp_path):
    folder, timeout = tmp_path / "run", 3.0
    process = start_pipesim("run", *FLAGS, "--steps", "5000", "--timeout", str(timeout), "--out", str(folder))
    wait_for_steps(folder, 2, process)
    tree = descendants(process.pid)
    frozen = rank_pids(folder)[1]
    os.kill(frozen, signal.SIGSTOP)  # frozen as a whole: its own watchdog cannot act
    try:
        started = time.monotonic()
        assert gone_within(tree, timeout + 5), [pid for pid in tree if alive(pid)]
        took = time.monotonic() - started
    finally:
        if alive(frozen):
            os.kill(frozen, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and took < timeout + 5
    stalled = re.search(r"rank 1 stalled on (\S+) \(no sign of life", err)
    assert stalled, err
    assert re.fullmatch(r"\d*[A-Z_]+\d*(@s\d+(v\d+)?)?", stalled[1]) and "Extra(" not in err
    assert trace_per_rank(folder)[0]["completed"] is False


def torchrun(line: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a `torchrun ...` line as printed by --prepare (on a free port: other runs may hold 29500)."""
    words = line.split()
    assert words[0] == "torchrun"
    command = [str(Path(sys.executable).parent / "torchrun"), f"--master-port={free_port()}", *words[1:]]
    return subprocess.run(
        command, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300, check=False
    )


def printed_command(text: str) -> str:
    return next(line.strip() for line in text.splitlines() if line.strip().startswith("torchrun --nnodes=1"))


def test_a_run_started_through_torchrun_by_hand_leaves_the_same_folder_and_resumes_the_same_way(
    tmp_path, capsys
):
    steps, folder = 6, tmp_path / "run"
    flags = [*FLAGS, "--steps", str(steps), "--checkpoint-every", "2", "--timeout", "20"]
    assert main(["run", *flags, "--out", str(folder), "--prepare"]) == 0
    schedule = RunConfig(**SIZES, steps=steps).build_schedule()
    fault = next(str(a) for a in schedule.actions[1] if a.step == 4 and a.kind is Kind.F)
    done = torchrun(printed_command(capsys.readouterr().out), {"PIPESIM_FAULT": f"1:{fault}:exit"})
    assert done.returncode != 0
    assert len(read_metrics(folder / "metrics.jsonl")) >= 4  # written by rank 0 as the run went
    assert_every_action_that_ran(folder, schedule, complete=False)

    before = snapshot(folder)
    assert main(["run", "--resume", str(folder), "--prepare"]) == 0
    assert snapshot(folder) == before  # preparing the resume deletes nothing
    line = printed_command(capsys.readouterr().out)
    assert "--resume-from" in line and line.endswith("step-000004")
    done = torchrun(line)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "first / final loss" in done.stdout and f"step {steps}/{steps}" in done.stderr
    assert losses(folder) == reference(tmp_path, steps)
    assert_every_action_that_ran(folder, schedule, complete=True)
    assert not (folder / "launcher.log").exists()  # only `pipesim run` has a launcher

"""Real ranks under torchrun on gloo (loopback): the same losses as the single-process mode, a complete
measured trace, and no hang when a rank dies or stalls.

Run: .venv/bin/pytest tests/executor/test_distributed.py      (about a minute: each launch starts torch)
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from executor.run import cpus as cpus_module
from executor.run.launch import launch
from executor.run.runconfig import RunConfig
from executor.run.runfolder import read_metrics
from executor.training.optim import OptimizerConfig
from traces.io import read_trace
from traces.metrics import compute_metrics

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def config(tmp_path: Path, name: str, **fields) -> RunConfig:
    base = dict(
        microbatch_size=2,
        seq_len=32,
        val_every=2,
        val_microbatches=2,
        optimizer=OptimizerConfig(name="adamw", lr=3e-3),
        out=str(tmp_path / name),
        timeout=30.0,
    )
    base.update(fields)
    return RunConfig(**base)


def run(config: RunConfig) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    code = launch(config, err=err, out=out)
    return code, err.getvalue() + out.getvalue()


# Each case crosses the distributed path differently.
CASES = [
    dict(schedule="2bw", stages=2, microbatches=4, steps=4),  # async, frozen forwards, validation
    dict(  # two stages per rank; clipping on: the NORM op's all-reduce over gloo (global norm)
        schedule="interleaved",
        stages=2,
        microbatches=4,
        steps=2,
        chunks=2,
        optimizer=OptimizerConfig(name="adamw", lr=3e-3, grad_clip=0.05),
    ),
    dict(schedule="amdp", stages=4, microbatches=4, steps=3),  # replicas: SEND_G/RECV_G, SEND_W/RECV_W
    dict(schedule="dualpipev", stages=2, microbatches=4, steps=2, chunks=2),  # V placement, OVERLAP_F_B pairs
]


@pytest.mark.parametrize("case", CASES, ids=[case["schedule"] for case in CASES])
def test_distributed_equals_single_process_and_traces_every_action(tmp_path, case):
    distributed = config(tmp_path, "torchrun", **case)
    single = config(tmp_path, "local", single_process=True, **case)
    code, text = run(distributed)
    assert code == 0, text
    assert run(single)[0] == 0
    ours, theirs = (
        read_metrics(Path(distributed.out) / "metrics.jsonl"),
        read_metrics(Path(single.out) / "metrics.jsonl"),
    )
    assert len(ours) == case["steps"]
    assert [(m["loss"], m.get("val_loss")) for m in ours] == [(m["loss"], m.get("val_loss")) for m in theirs]
    assert all("val_loss" in m for m in ours if m["step"] % 2 == 0)  # steps count from 1

    trace = read_trace(Path(distributed.out) / "trace.json")
    schedule = distributed.build_schedule()
    assert trace.source == "measured" and trace.meta["completed"] and trace.meta["backend"] == "gloo"
    assert trace.meta["cpus"] == len(os.sched_getaffinity(0))  # the machine its ranks shared
    # each rank on a CPU of its own (threads = 1) where the machine has enough, else all of them
    machine = sorted(os.sched_getaffinity(0))
    fits = case["stages"] <= len(machine)
    assert trace.meta["pinned"] == fits
    wanted = [[cpu] for cpu in machine[: case["stages"]]] if fits else [machine] * case["stages"]
    assert rank_cpus(Path(distributed.out)) == wanted
    summary = (
        f"torchrun, gloo, rank 0 on CPU {machine[0]}, rank 1 on CPU {machine[1]}"
        if fits
        else "ranks not pinned"
    )
    assert summary in text, text
    assert "cpus" not in read_trace(Path(single.out) / "trace.json").meta
    assert sorted((e.rank, str(e.action)) for e in trace.events) == sorted(
        (rank, str(action)) for rank, action in schedule.all_actions()
    )
    for event in trace.events:
        assert 0 <= event.start <= event.end
        assert event.memory is not None and event.memory > 0
        if event.stream != "compute":
            assert event.bytes > 0, event
    starts = [event.start for event in trace.events]
    assert starts == sorted(starts)
    assert compute_metrics(trace).to_dict()["throughput"]["tokens_per_s"] > 0  # the shared metrics read it


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rank_starts(folder: Path) -> list[dict]:
    """Each rank's first record (its start: pid, CPUs)."""
    return [
        json.loads(log.read_text().splitlines()[0]) for log in sorted((folder / "ranks").glob("rank*.jsonl"))
    ]


def rank_pids(folder: Path) -> list[int]:
    return [start["pid"] for start in rank_starts(folder)]


def rank_cpus(folder: Path) -> list[list[int]]:
    return [start["cpus"] for start in rank_starts(folder)]


@pytest.mark.parametrize(
    ("mode", "timeout"),
    [("exit", 30.0), ("sleep", 3.0), ("abort", 30.0)],  # a rank that dies, stalls, crashes (SIGABRT)
)
def test_a_dead_or_stalled_rank_stops_every_rank(tmp_path, monkeypatch, mode, timeout):
    cfg = config(
        tmp_path, mode, schedule="1f1b", stages=2, microbatches=4, steps=6, timeout=timeout, pin=False
    )
    monkeypatch.setenv("PIPESIM_FAULT", f"1:1F2@s3v3:{mode}")
    monkeypatch.setattr(cpus_module, "available_cpus", lambda: [0])  # a machine of one CPU: a warning first
    code, text = run(cfg)
    assert code == 1
    assert text.startswith("pipesim: warning: 2 ranks x 1 thread(s) want 2 CPUs and this machine has 1")
    assert "rank 1" in text and "1F2@s3v3" in text
    # a stall is named as one: by the rank's own watchdog, or by the launcher if a peer's error came first
    stalled = re.search(r"rank 1 (stalled on 1F2@s3v3 \(no progress|stopped on 1F2@s3v3 \(stalled)", text)
    assert bool(stalled) == (mode == "sleep"), text
    assert "rank 0 stopped on 0" in text or "rank 0 ended without a word" in text
    if mode == "abort":  # a crash names no op of its own: the launcher says where to look, and that has
        assert "rank 1 ended without a word (crashed or killed) on 1F2@s3v3: see launcher.log" in text
        launcher_log = (Path(cfg.out) / "launcher.log").read_text()
        assert "Fatal Python error: Aborted" in launcher_log and "in hook" in launcher_log  # the stack
    assert all(not alive(pid) for pid in rank_pids(Path(cfg.out)))
    trace = read_trace(Path(cfg.out) / "trace.json")
    assert not trace.meta["completed"] and trace.meta["cpus"] == 1 and not trace.meta["pinned"]
    assert rank_cpus(Path(cfg.out)) == [sorted(os.sched_getaffinity(0))] * 2  # --no-pin: the OS places them
    assert {e.action.step for e in trace.events} == {0, 1, 2, 3}  # the work before the fault is kept
    assert len(read_metrics(Path(cfg.out) / "metrics.jsonl")) == 3

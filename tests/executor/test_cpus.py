"""Which CPUs a CPU run's ranks get: CPUs of their own where the machine has enough (executor.run.cpus).

Run: .venv/bin/pytest tests/executor/test_cpus.py
"""

from __future__ import annotations

import json
import os

import pytest

from executor.run import cpus
from executor.run.runconfig import RunConfig
from pipesim.cli import main

SMALL = ["--microbatch-size", "2", "--seq-len", "32", "--steps", "4", "--microbatches", "4"]


def ranks_cpus(config: RunConfig, available: list[int], local_ranks: int | None = None) -> list:
    local_ranks = config.stages if local_ranks is None else local_ranks
    return [
        cpus.rank_cpus(config, local_rank=rank, local_ranks=local_ranks, available=available)
        for rank in range(local_ranks)
    ]


def test_each_rank_gets_its_threads_worth_of_the_available_cpus_in_a_row():
    assert ranks_cpus(RunConfig(stages=2), [0, 1]) == [(0,), (1,)]
    assert ranks_cpus(RunConfig(stages=2, threads=2), [3, 5, 8, 9, 12]) == [(3, 5), (8, 9)]  # a taskset
    assert ranks_cpus(RunConfig(stages=3), [0, 1, 2, 3]) == [(0,), (1,), (2,)]  # one CPU left free
    # several machines: each pins its own local ranks
    assert ranks_cpus(RunConfig(stages=8, threads=2), [0, 1, 2, 3], local_ranks=2) == [(0, 1), (2, 3)]


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(stages=4),  # more ranks than CPUs: they take turns, the OS places them
        RunConfig(stages=2, threads=2),  # more threads than CPUs
        RunConfig(stages=2, pin=False),  # --no-pin
        RunConfig(stages=2, device="cuda"),  # a rank is its GPU
        RunConfig(stages=2, single_process=True),  # one process
    ],
    ids=["crowded", "threads", "no-pin", "cuda", "single-process"],
)
def test_a_run_that_cannot_or_should_not_be_pinned_is_not(config):
    assert ranks_cpus(config, [0, 1]) == [None] * config.stages


def test_pin_rank_pins_this_process_to_its_cpus(monkeypatch):
    before = os.sched_getaffinity(0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(cpus, "available_cpus", lambda: [0, 1])
    calls = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, mask: calls.append((pid, tuple(mask))))
    assert cpus.pin_rank(RunConfig(stages=2)) == (1,)
    assert calls == [(0, (1,))]
    assert cpus.pin_rank(RunConfig(stages=2, pin=False)) is None and len(calls) == 1
    assert os.sched_getaffinity(0) == before  # (the test's own process was never pinned)


def test_no_pin_is_saved_and_a_resume_may_change_it(tmp_path, capsys):
    folder = tmp_path / "a"
    assert main(["run", "--schedule", "1f1b", *SMALL, "--no-pin", "--out", str(folder), "--prepare"]) == 0
    saved = RunConfig.from_dict(json.loads((folder / "config.json").read_text())["config"])
    assert saved.pin is False
    assert "pin" not in RunConfig(pin=False).identity()  # how the ranks are placed, not what they compute


def test_placement_is_every_ranks_cpus_or_none(monkeypatch):
    monkeypatch.setattr(cpus, "available_cpus", lambda: [2, 3, 5, 7])
    assert cpus.placement(RunConfig(stages=2, threads=2)) == [(2, 3), (5, 7)]
    assert cpus.placement(RunConfig(stages=4, threads=2)) is None  # eight threads, four CPUs
    assert cpus.placement(RunConfig(stages=2, pin=False)) is None

"""The CUDA path on one GPU. Skipped without a GPU (CI has none); on a GPU machine:
`pytest -m gpu tests/executor/test_gpu.py`. One GPU cannot hold several NCCL ranks, so the runs are
single-process: every rank in one process, taking turns on the GPU's one stream.

- a CUDA run trains the CPU run's losses (fp32, TF32 off) to float tolerance and runs the same actions
  in the same order on every rank; its compute actions, timed by CUDA events, never overlap (one stream);
- its memory is each rank's own tensors, within what the attention kernels save of the CPU run's count,
  not the allocator's count, which holds every rank's tensors;
- a CUDA timer's times land on the run's clock even when the clock's zero moves after the timer was
  made (step 0 starting after the set-up, a resume continuing the stopped run's time).
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
import torch

from executor.run.worker import Clock, CudaTimer
from pipesim.cli import main
from traces.io import read_trace

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

RUN = ["run", "--single-process", "--schedule", "1f1b", "-p", "2", "-m", "4", "--steps", "3"]
RUN += ["--val-every", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run on the CPU and on the GPU: {device: its folder}."""
    root = tmp_path_factory.mktemp("gpu")
    for device in ("cpu", "cuda"):
        assert main([*RUN, "--device", device, "--out", str(root / device)]) == 0
    return {device: root / device for device in ("cpu", "cuda")}


def losses(folder) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_cuda_run_trains_the_cpu_runs_losses_with_the_same_actions(runs):
    assert losses(runs["cuda"]) == pytest.approx(losses(runs["cpu"]), rel=1e-4)
    cpu, cuda = read_trace(runs["cpu"] / "trace.json"), read_trace(runs["cuda"] / "trace.json")
    for rank in range(2):
        assert [e.action for e in cuda.rank_events(rank)] == [e.action for e in cpu.rank_events(rank)]
    assert cuda.meta["gpu"] == torch.cuda.get_device_name()  # calibrate states speeds against its preset
    computed = sorted((e for e in cuda.events if e.stream == "compute"), key=lambda e: e.start)
    assert all(e.end > e.start for e in computed)
    assert all(b.start >= a.end - 1e-6 for a, b in itertools.pairwise(computed))


def test_a_cuda_ranks_memory_is_its_own_tensors_not_the_allocators_total(runs):
    cpu, cuda = read_trace(runs["cpu"] / "trace.json"), read_trace(runs["cuda"] / "trace.json")
    for rank in range(2):
        ours = [e.memory for e in cuda.rank_events(rank)]
        theirs = [e.memory for e in cpu.rank_events(rank)]
        assert max(ours) == pytest.approx(max(theirs), rel=0.25)  # the allocator's total is about twice
        assert min(ours) == pytest.approx(min(theirs), rel=0.25)


def test_the_cuda_timer_follows_the_clocks_zero_moved_after_it_was_made():
    clock = Clock()
    timer = CudaTimer(clock)
    clock.zero_ns = time.perf_counter_ns() - 5 * 10**9  # the run's time now reads 5 s
    seen = []
    start = timer.begin()
    torch.cuda._sleep(1_000_000)  # about a millisecond of device time
    timer.later(start, timer.begin(), lambda begun, ended: seen.append((begun, ended)))
    timer.flush()
    ((begun, ended),) = seen
    assert 4.9 < begun < ended < clock.now() + 0.01

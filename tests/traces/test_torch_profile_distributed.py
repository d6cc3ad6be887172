"""A real torch.distributed.pipelining run on gloo, profiled with torch.profiler, imported into pipesim.

.venv/bin/pytest tests/traces/test_torch_profile_distributed.py -q      (one process group, ~15 s)

Two ranks (torch.multiprocessing spawn, one thread each, loopback), a tiny two-stage model, m = 4, two
optimizer steps per schedule, all in one process group:
- ScheduleGPipe, which records 'Forward j' / 'Backward j' spans;
- 1F1B run by PyTorch's _PipelineScheduleRuntime, which records a 'PP:<action>' span per action. Its
  order comes from pipesim's CSV export, loaded with the runtime's own CSV reader: torch's Schedule1F1B
  records no spans at all (torch 2.13), and its `pipeline_order` is not the order it runs (it starts the
  last rank with F1), so the runtime cannot take it from there;
- Schedule1F1B itself, once, to pin down what importing its profile says.
"""

from __future__ import annotations

import datetime
import os
from itertools import pairwise
from pathlib import Path

import pytest

from pipesim.cli import main
from schedules import build
from schedules.csv_io import write_csv
from schedules.ir import COMPUTE_KINDS
from traces.io import read_trace
from traces.metrics import compute_metrics
from traces.schema import Trace, TraceError
from traces.torch_profile import import_profiles

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RANKS, MICROBATCHES, STEPS = 2, 4, 2


def _worker(rank: int, folder: str) -> None:
    """One rank: the three schedules under torch.profiler, one Chrome trace each."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

    torch.set_num_threads(1)
    torch.manual_seed(rank)
    store = f"file://{folder}/store"
    dist.init_process_group(
        "gloo", init_method=store, rank=rank, world_size=RANKS, timeout=datetime.timedelta(seconds=60)
    )
    inputs, targets = torch.randn(8, 16), torch.randn(8, 16)

    def loss(output, target):
        return torch.nn.functional.mse_loss(output, target)

    def profiled(name: str, make, steps: int) -> None:
        module = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh())
        schedule = make(PipelineStage(module, rank, RANKS, torch.device("cpu")))
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                optimizer.zero_grad()
                schedule.step(inputs) if rank == 0 else schedule.step(target=targets)
                optimizer.step()
        profiler.export_chrome_trace(f"{folder}/{name}_rank{rank}.json")

    def runtime_1f1b(stage):
        schedule = _PipelineScheduleRuntime([stage], MICROBATCHES, loss_fn=loss)
        schedule._load_csv(f"{folder}/1f1b.csv")
        return schedule

    try:
        profiled("gpipe", lambda stage: ScheduleGPipe(stage, MICROBATCHES, loss_fn=loss), STEPS)
        profiled("1f1b", runtime_1f1b, STEPS)
        profiled("plain1f1b", lambda stage: Schedule1F1B(stage, MICROBATCHES, loss_fn=loss), 1)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("profiles")
    write_csv(folder / "1f1b.csv", build("1f1b", RANKS, MICROBATCHES))  # compute actions of one step
    mp.spawn(_worker, args=(str(folder),), nprocs=RANKS, join=True)
    return folder


def files(folder: Path, name: str) -> list[str]:
    return [str(folder / f"{name}_rank{rank}.json") for rank in range(RANKS)]


def check(trace: Trace, name: str) -> None:
    """pipesim's lowered schedule, action for action and in order; sane times; metrics that work."""
    planned = build(name, RANKS, MICROBATCHES, steps=STEPS)
    assert trace.source == "measured" and trace.schedule.steps == STEPS
    for rank in range(RANKS):
        events = trace.rank_events(rank)
        compute = [e.action for e in events if e.action.kind in COMPUTE_KINDS]
        assert compute == [a for a in planned.actions[rank] if a.kind in COMPUTE_KINDS]
        assert sorted(str(e.action) for e in events) == sorted(map(str, planned.actions[rank]))
        serial = [e for e in events if e.stream != "send"]  # compute and receives: one after the other
        assert all(b.start >= a.end for a, b in pairwise(serial))
    assert min(e.start for e in trace.events) >= 0.0 and all(e.end >= e.start for e in trace.events)
    keys = [(e.start, e.rank) for e in trace.events]
    assert keys == sorted(keys)
    metrics = compute_metrics(trace)
    assert all(0 < u <= 1 for u in metrics.utilization), metrics.utilization
    assert metrics.step_time > 0 and metrics.delay == [0] * RANKS and metrics.mismatches == [0] * RANKS


def test_schedule_gpipe_imports_in_pipesims_gpipe_order(profiles: Path) -> None:
    trace = import_profiles(
        files(profiles, "gpipe"), schedule="gpipe", microbatches=MICROBATCHES, steps=STEPS
    )
    check(trace, "gpipe")
    assert trace.meta["spans"].startswith("ScheduleGPipe") and trace.meta["backend"] == "gloo"


def test_runtime_1f1b_imports_through_the_command(profiles: Path, capsys) -> None:
    out = profiles / "1f1b.trace.json"
    argv = ["import-profile", *files(profiles, "1f1b"), "--schedule", "1f1b", "-m", str(MICROBATCHES)]
    assert main([*argv, "-o", str(out)]) == 0, capsys.readouterr().err
    trace = read_trace(out)
    check(trace, "1f1b")
    assert trace.meta["profiles"][0]["left_out"]["PP:REDUCE_GRAD"] == STEPS
    assert main([*argv[:-1], "2", "-o", str(out)]) == 2  # m = 2: the spans name microbatch 3
    assert "names microbatch" in capsys.readouterr().err


def test_schedule_1f1b_says_it_has_no_spans_or_imports_in_order(profiles: Path) -> None:
    try:
        trace = import_profiles(files(profiles, "plain1f1b"), schedule="1f1b", microbatches=MICROBATCHES)
    except TraceError as error:  # torch 2.13: Schedule1F1B records no record_function span
        assert "no torch.distributed.pipelining spans" in str(error)
    else:  # a torch that records them must give pipesim's 1F1B order
        planned = build("1f1b", RANKS, MICROBATCHES)
        for rank in range(RANKS):
            compute = [e.action for e in trace.rank_events(rank) if e.action.kind in COMPUTE_KINDS]
            assert compute == [a for a in planned.actions[rank] if a.kind in COMPUTE_KINDS]

"""Checkpoints and resume: a run stopped and resumed gives bit-identical losses to one that never stopped.

Run: .venv/bin/pytest tests/executor/test_resume.py

In one process for every schedule (cheap), then once through the real thing: `pipesim run` with a rank
killed after a checkpoint, `pipesim run --resume`, compared with an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from executor.run.assemble import Assembly
from executor.run.checkpoint_files import find_checkpoint, read_rank_file, step_folder
from executor.run.launch import launch
from executor.run.local import build_local, round_robin
from executor.run.runconfig import RunConfig
from executor.run.runfolder import RunFolder, read_metrics
from executor.training.data import load_corpus
from executor.training.optim import OptimizerConfig
from pipesim.cli import main
from schedules.semantics import Message
from traces.io import read_trace

SGD = OptimizerConfig(name="sgd", lr=0.05)  # momentum: optimizer state that must be restored


def config(**fields) -> RunConfig:
    base = dict(microbatch_size=2, seq_len=32, val_every=2, checkpoint_every=2, optimizer=SGD)
    base.update(fields)
    return RunConfig(**base)


def local_losses(assembly: Assembly, folder: RunFolder, resume_from: Path | None):
    runtimes = build_local(assembly, checkpoints=folder.checkpoints, resume_from=resume_from)
    round_robin(runtimes)
    losses = sorted((step, j, loss) for r in runtimes for step, j, loss, _ in r.losses)
    vals = sorted((step, loss) for r in runtimes for step, loss, _ in r.vals)
    return losses, vals, runtimes


# Every versioning, and a rank holding several stages (interleaved) or replicas (AMDP).
CASES = [
    dict(schedule="1f1b", stages=2),
    dict(schedule="zb-h1", stages=4),  # an I before the cut, its W after it
    dict(schedule="interleaved", stages=2, chunks=2),
    dict(schedule="pipedream", stages=4),  # P-s versions in flight at the cut
    dict(schedule="2bw", stages=4),
    dict(schedule="amdp", stages=4),  # in-flight forwards on the version before the update
]


@pytest.mark.parametrize("case", CASES, ids=[case["schedule"] for case in CASES])
def test_resume_in_one_process_is_bit_identical(tmp_path, case):
    torch.set_num_threads(1)
    cfg = config(microbatches=4, steps=6, **case)
    assembly = Assembly(cfg, corpus=load_corpus())
    folder = RunFolder(tmp_path)
    full_losses, full_vals, runtimes = local_losses(assembly, folder, None)
    assert find_checkpoint(folder.checkpoints, cfg.stages)[0] == 3
    final = {s: [p.clone() for p in st.params] for r in runtimes for s, st in r.stages.items()}
    for step in (1, 3):
        losses, vals, resumed = local_losses(assembly, folder, step_folder(folder.checkpoints, step))
        assert losses == full_losses
        assert vals == full_vals
        for r in resumed:
            for stage, state in r.stages.items():
                assert all(torch.equal(a, b) for a, b in zip(state.params, final[stage], strict=True))


@pytest.mark.distributed
@pytest.mark.slow
def test_killed_run_resumed_with_the_cli_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    flags = ["--schedule", "2bw", "--stages", "2", "--microbatches", "4", "--steps", "6", "--val-every", "2"]
    flags += ["--checkpoint-every", "2", "--microbatch-size", "2", "--seq-len", "32", "--optimizer", "sgd"]
    flags += ["--lr", "0.05", "--timeout", "20"]
    folder = tmp_path / "stopped"
    monkeypatch.setenv("PIPESIM_FAULT", "1:1F2@s4v3:exit")
    assert main(["run", *flags, "--out", str(folder)]) == 1
    assert find_checkpoint(folder / "checkpoints", 2)[0] == 3
    assert len(read_metrics(folder / "metrics.jsonl")) < 6
    monkeypatch.delenv("PIPESIM_FAULT")
    assert main(["run", "--resume", str(folder)]) == 0

    reference = config(
        schedule="2bw",
        stages=2,
        microbatches=4,
        steps=6,
        single_process=True,
        out=str(tmp_path / "reference"),
    )
    assert launch(reference, err=io.StringIO(), out=io.StringIO()) == 0
    resumed, uninterrupted = (
        read_metrics(folder / "metrics.jsonl"),
        read_metrics(tmp_path / "reference/metrics.jsonl"),
    )
    assert [(m["loss"], m.get("val_loss")) for m in resumed] == [
        (m["loss"], m.get("val_loss")) for m in uninterrupted
    ]
    times = [m["time"] for m in resumed]
    assert times == sorted(times)
    trace = read_trace(folder / "trace.json")  # one trace, both segments merged, every action once
    assert trace.meta["completed"] and not list(folder.glob("trace.segment*"))
    assert sorted((e.rank, str(e.action)) for e in trace.events) == sorted(
        (rank, str(action)) for rank, action in reference.build_schedule().all_actions()
    )
    assert json.loads((folder / "config.json").read_text())["config"]["resume"] == str(folder)


def test_a_rank_file_from_before_the_rooms_still_reads(tmp_path, monkeypatch):
    """Rank files written before the executor had rooms name their messages' class
    executor.program.Message (gone since): a checkpoint taken then still resumes."""
    old = types.ModuleType("executor.program")
    old.Message = NamedTuple("Message", [(f, object) for f in Message._fields])
    old.Message.__module__ = "executor.program"
    monkeypatch.setitem(sys.modules, "executor.program", old)
    message = old.Message("F", 0, 1, 2, 3)
    torch.save({"resend": {message: torch.ones(2)}}, tmp_path / "rank1.pt")
    monkeypatch.delitem(sys.modules, "executor.program")
    (key, tensor), *rest = read_rank_file(tmp_path, 1, torch.device("cpu"))["resend"].items()
    assert type(key) is Message and key == Message("F", 0, 1, 2, 3) and rest == []
    assert torch.equal(tensor, torch.ones(2))

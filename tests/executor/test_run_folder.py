"""The run folder's life without starting any rank: bad places, foreign folders, the lock, checkpoint files
(digests, damage, pruning), resume checks, a diverging run, and what --prepare prints.

Run: .venv/bin/pytest tests/executor/test_run_folder.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from executor.interpreter.program import CUT, EVAL_F, Extra
from executor.run.checkpoint_files import find_checkpoint, problem, prune, step_folder, write_rank_file
from executor.run.runfolder import FolderLock, RunFolder, op_text
from pipesim.cli import main
from schedules import parse_action

SMALL = ["--microbatch-size", "2", "--seq-len", "32", "--steps", "4", "--microbatches", "4"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("pipesim: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("where", ["a file", "under a file", "an unwritable place"])
def test_a_bad_out_path_is_one_line_and_exit_2(tmp_path, capsys, where):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    out = {"a file": existing, "under a file": existing / "run", "an unwritable place": Path("/sys/pipesim")}
    assert main(["run", *SMALL, "--single-process", "--out", str(out[where])]) == 2
    assert f"--out {out[where]}" in one_line_error(capsys)
    assert existing.read_text() == "keep me\n"


def test_a_folder_that_is_not_a_run_folder_is_refused_and_left_untouched(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "ranks").mkdir(parents=True)
    (mine / "metrics.jsonl").write_text("precious\n")
    (mine / "ranks" / "rank0.jsonl").write_text("mine too\n")
    assert main(["run", *SMALL, "--single-process", "--out", str(mine)]) == 2
    assert "is not empty and holds no run (metrics.jsonl, ranks)" in one_line_error(capsys)
    assert sorted(p.name for p in mine.rglob("*")) == ["metrics.jsonl", "rank0.jsonl", "ranks"]
    assert (mine / "metrics.jsonl").read_text() == "precious\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", *SMALL, "--out", str(empty), "--prepare"]) == 0  # an empty folder is fine


def test_a_folder_in_use_is_refused_with_one_line(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["run", *SMALL, "--checkpoint-every", "1", "--out", str(folder), "--prepare"]) == 0
    capsys.readouterr()
    fresh = tmp_path / "fresh"  # empty, but another run has just claimed it
    fresh.mkdir()
    with FolderLock(RunFolder(folder), "a test"), FolderLock(RunFolder(fresh), "a test"):
        for path, command in ((folder, ["--resume", str(folder)]), (fresh, [*SMALL, "--out", str(fresh)])):
            assert main(["run", *command]) == 2
            assert f"{path} is in use by another run (a test, pid " in one_line_error(capsys)
    assert main(["run", "--resume", str(folder)]) == 2  # released: now the real reason
    assert "no complete checkpoint" in one_line_error(capsys)


def test_a_resume_with_another_setting_names_the_one_field(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["run", *SMALL, "--out", str(folder), "--prepare"]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(folder), "--lr", "0.01"]) == 2
    err = one_line_error(capsys)
    assert "was run with optimizer.lr=0.001, this run has 0.01" in err and "weight_decay" not in err


def refuse(word: str) -> None:
    raise ValueError(f"not JSON: a bare {word}")  # strict JSON has no NaN or Infinity


def test_a_diverging_run_stops_with_a_clear_message_and_valid_json(tmp_path, capsys):
    folder = tmp_path / "run"
    flags = [*SMALL, "--optimizer", "sgd", "--lr", "1e30", "--single-process"]
    assert main(["run", *flags, "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "the loss became nan at step 2" in err and "training diverged" in err
    for name in ("metrics.jsonl", "trace.json", "ranks/rank0.jsonl", "ranks/rank1.jsonl"):
        text = (folder / name).read_text()
        lines = text.splitlines() if name.endswith("jsonl") else [text]
        for line in lines:
            json.loads(line, parse_constant=refuse)
    assert json.loads((folder / "trace.json").read_text())["meta"]["completed"] is False


def test_the_executors_own_ops_print_in_the_ir_notation():
    assert op_text(Extra(CUT, -1, 3)) == "CUT@s3"
    assert op_text(Extra(EVAL_F, 1, 3, 0)) == "1EVAL_F0@s3"
    assert op_text(parse_action("1F2@s3v3")) == "1F2@s3v3"


def save_checkpoint(root: Path, step: int, ranks: int = 2) -> None:
    for rank in range(ranks):
        write_rank_file(root, step, rank, {"weights": torch.full((4,), float(step))}, time=float(step))


def test_checkpoints_are_verified_and_a_damaged_one_is_skipped_with_a_warning(tmp_path):
    for step in (1, 3, 5):
        save_checkpoint(tmp_path, step)
    assert find_checkpoint(tmp_path, 2) == (5, step_folder(tmp_path, 5))
    assert step_folder(tmp_path, 5).name == "step-000006"  # named by the steps done
    latest = step_folder(tmp_path, 5) / "rank1.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    warnings = []
    assert find_checkpoint(tmp_path, 2, warnings.append) == (3, step_folder(tmp_path, 3))
    assert warnings == [
        "checkpoint step-000006 is damaged (rank1.pt has 100 bytes, its marker says "
        f"{json.loads((latest.parent / 'rank1.json').read_text())['bytes']}); skipping it"
    ]
    middle = step_folder(tmp_path, 3) / "rank0.pt"
    data = bytearray(middle.read_bytes())
    data[-30] ^= 1  # same size, one bit flipped
    middle.write_bytes(bytes(data))
    assert "does not match the digest" in problem(step_folder(tmp_path, 3), 2)
    assert find_checkpoint(tmp_path, 2) == (1, step_folder(tmp_path, 1))


def test_pruning_keeps_the_newest_complete_checkpoints_and_what_is_still_written(tmp_path):
    for step in (1, 3, 5):
        save_checkpoint(tmp_path, step)
    write_rank_file(tmp_path, 7, 0, {"weights": torch.zeros(4)}, time=7.0)  # rank 1 still writing step 7
    prune(tmp_path, 2, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004", "step-000006", "step-000008"]


def test_prepare_prints_where_the_node_count_goes_and_works_without_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU machine
    folder = tmp_path / "big"
    flags = ["--stages", "4", *SMALL, "--device", "cuda", "--out", str(folder), "--prepare"]
    assert main(["run", *flags]) == 0
    out = capsys.readouterr().out
    assert f"torchrun --nnodes=1 --nproc-per-node=4 -m executor.worker --run-dir {folder}" in out
    assert "torchrun --nnodes=NODES --nproc-per-node=RANKS_PER_NODE --rdzv-backend=c10d" in out
    assert "NODES machines x RANKS_PER_NODE ranks = 4" in out
    assert "note: no CUDA device here; the run needs 4 GPUs" in out
    assert json.loads((folder / "config.json").read_text())["config"]["device"] == "cuda"
    assert main(["run", *flags[:-3], "--out", str(tmp_path / "now")]) == 2  # running here still needs one
    assert "no CUDA device is visible" in capsys.readouterr().err

"""The byte corpus: deterministic batches, a disjoint train/validation split, one-line errors.

Run: .venv/bin/pytest tests/executor/test_data.py
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from executor.errors import ExecutorConfigError
from executor.training.data import load_corpus

SIZES = dict(microbatch_size=4, seq_len=32)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(max_bytes=300_000)


def test_default_corpus_is_the_stdlib_capped(corpus):
    assert corpus.source.startswith("stdlib:")
    assert corpus.train.numel() + corpus.val.numel() == 300_000
    assert corpus.files > 1
    assert b"def " in bytes(corpus.train[:50_000].tolist())
    assert load_corpus(max_bytes=300_000).digest == corpus.digest


def test_same_coordinates_same_batch(corpus):
    first = corpus.batch("train", step=5, microbatch=2, seed=0, **SIZES)
    again = corpus.batch("train", step=5, microbatch=2, seed=0, **SIZES)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    inputs, targets = first
    assert inputs.dtype == targets.dtype == torch.int64
    assert tuple(inputs.shape) == (4, 32)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


@pytest.mark.parametrize(
    "change",
    [dict(step=6), dict(microbatch=3), dict(seed=1), dict(split="val")],
)
def test_any_other_coordinate_gives_another_batch(corpus, change):
    coordinates = dict(split="train", step=5, microbatch=2, seed=0) | change
    split = coordinates.pop("split")
    base, _ = corpus.batch("train", step=5, microbatch=2, seed=0, **SIZES)
    other, _ = corpus.batch(split, **coordinates, **SIZES)
    assert not torch.equal(base, other)


def test_split_is_every_tenth_block_and_disjoint(tmp_path):
    data = bytes(range(32, 127)) * 30  # 2850 bytes of text
    (tmp_path / "one.txt").write_bytes(data)
    loaded = load_corpus(tmp_path / "one.txt")
    block = len(data) // 10
    val = b"".join(data[i : i + block] for i in range(9 * block, len(data), 10 * block))
    train = b"".join(data[i : i + 9 * block] for i in range(0, len(data), 10 * block))
    assert bytes(loaded.val.tolist()) == val
    assert bytes(loaded.train.tolist()) == train
    assert loaded.val.numel() + loaded.train.numel() == len(data)


def test_folder_reads_text_files_sorted_recursively(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "b" / "2.md").write_bytes(b"second file\n" * 20)
    (tmp_path / "a.txt").write_bytes(b"first file\n" * 20)
    (tmp_path / ".git" / "config").write_bytes(b"hidden\n" * 20)
    (tmp_path / "model.bin").write_bytes(b"\0\1\2" * 100)
    loaded = load_corpus(tmp_path)
    expected = b"first file\n" * 20 + b"second file\n" * 20
    assert loaded.files == 2
    assert loaded.digest == hashlib.sha256(expected).hexdigest()


def test_cap_cuts_the_last_file(tmp_path):
    (tmp_path / "big.txt").write_bytes(b"x" * 5000)
    loaded = load_corpus(tmp_path, max_bytes=1000)
    assert loaded.train.numel() + loaded.val.numel() == 1000


def test_bad_paths_are_one_line_user_errors(tmp_path):
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "x.bin").write_bytes(b"\0" * 64)
    (tmp_path / "short.txt").write_bytes(b"a few bytes of text only")
    cases = [
        (tmp_path / "missing", "no such file or folder"),
        (tmp_path / "binary", "holds no text"),
    ]
    for path, words in cases:
        with pytest.raises(ExecutorConfigError, match=words) as caught:
            load_corpus(path)
        assert "\n" not in str(caught.value)
    short = load_corpus(tmp_path / "short.txt")
    with pytest.raises(ExecutorConfigError, match="fewer than seq_len"):
        short.batch("val", step=0, microbatch=0, microbatch_size=1, seq_len=64, seed=0)

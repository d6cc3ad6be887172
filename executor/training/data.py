"""Byte-level language-modelling data from a real corpus every machine has: the Python standard library.

    from executor.training.data import load_corpus
    corpus = load_corpus()                    # the stdlib's own .py files; or load_corpus("notes/")
    inputs, targets = corpus.batch("train", step=3, microbatch=1, microbatch_size=8, seq_len=64, seed=0)

The corpus: files sorted by relative path, read as bytes and concatenated, up to `max_bytes` (the last file
cut short). By default the .py files under sysconfig's "stdlib" folder (site-packages left out); with a
path, that file, or every text file under that folder (recursively; a file is text when its first 4 KiB
hold no NUL byte; hidden folders and __pycache__ skipped).

Train/validation split, deterministic and disjoint by byte position: the corpus is cut into blocks of
`block = min(16 KiB, size // 10)` bytes and every tenth block (index 9, 19, ...) is validation.

    corpus bytes:  |t|t|t|t|t|t|t|t|t|V|t|t|t|t|t|t|t|t|t|V|t|...

A batch is a pure function of (seed, split, step, microbatch): the same on every rank, every run, every
process count, so a pipelined run and single-process training see exactly the same tokens.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from executor.errors import ExecutorConfigError

DEFAULT_MAX_BYTES = 4 * 2**20
"""Default corpus cap, in bytes: loads in well under a second, plenty for the model sizes here."""
BLOCK_BYTES = 16 * 2**10
"""Largest train/validation block, in bytes."""
VALIDATION_EVERY = 10
"""One block in this many is validation."""
SPLITS = ("train", "val")
_SNIFF_BYTES = 4096
_SKIPPED_FOLDERS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True, kw_only=True, eq=False)
class Corpus:
    """A loaded corpus, already split; tensors of bytes (uint8). Compare corpora by `digest`."""

    source: str
    """Where it came from: "stdlib:<folder>" or the path given."""
    files: int
    """Files read, a count (the last may be cut at the cap)."""
    digest: str
    """SHA-256 (hex) of all bytes read, before the split: the same digest means the same data."""
    train: torch.Tensor
    """Training bytes, uint8 [n]."""
    val: torch.Tensor
    """Validation bytes, uint8 [n]."""

    def describe(self) -> dict[str, str | int]:
        """What to record in a run's config.json to recognise the data again."""
        return {
            "source": self.source,
            "files": self.files,
            "digest": self.digest,
            "train_bytes": self.train.numel(),
            "val_bytes": self.val.numel(),
        }

    def check(self, seq_len: int) -> None:
        """Raise a one-line error unless both splits hold at least one window of seq_len + 1 bytes."""
        for split in SPLITS:
            size = self._split(split).numel()
            if size < seq_len + 1:
                raise ExecutorConfigError(
                    f"data: the {split} split of {self.source} has {size} bytes, fewer than "
                    f"seq_len + 1 = {seq_len + 1}; give a larger corpus or a shorter sequence"
                )

    def batch(
        self, split: str, *, step: int, microbatch: int, microbatch_size: int, seq_len: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), int64 [microbatch_size, seq_len]; targets are inputs shifted by one byte.

        Windows start at offsets drawn from a generator seeded by (seed, split, step, microbatch) alone.
        """
        self.check(seq_len)
        data = self._split(split)
        generator = torch.Generator().manual_seed(_mix(seed, split, step, microbatch))
        starts = torch.randint(0, data.numel() - seq_len, (microbatch_size,), generator=generator)
        windows = data[starts[:, None] + torch.arange(seq_len + 1)].long()
        return windows[:, :-1], windows[:, 1:]

    def _split(self, split: str) -> torch.Tensor:
        if split not in SPLITS:
            raise ExecutorConfigError(f"data: unknown split {split!r}; choose from {', '.join(SPLITS)}")
        return self.train if split == "train" else self.val


def _mix(seed: int, split: str, step: int, microbatch: int) -> int:
    """A 63-bit generator seed from the batch coordinates (stable across processes and machines)."""
    key = f"{seed}/{split}/{step}/{microbatch}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def stdlib_folder() -> Path:
    """The standard library folder of the running Python."""
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(path: str | os.PathLike | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Corpus:
    """Read and split the corpus: the stdlib's .py files when `path` is None, else a text file or folder."""
    if max_bytes < VALIDATION_EVERY:
        raise ExecutorConfigError(f"data: max_bytes must be at least {VALIDATION_EVERY}, got {max_bytes}")
    if path is None:
        root = stdlib_folder()
        files = _walk(root, suffix=".py")
        source = f"stdlib:{root}"
    else:
        root = Path(path)
        files = _user_files(root)
        source = str(path)
    data, used = _read(files, max_bytes, source)
    train, val = _split_blocks(data)
    return Corpus(
        source=source,
        files=used,
        digest=hashlib.sha256(data).hexdigest(),
        train=train,
        val=val,
    )


def _user_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if root.is_dir():
        return _walk(root, suffix=None)
    raise ExecutorConfigError(f"data: no such file or folder: {root}")


def _walk(root: Path, suffix: str | None) -> list[Path]:
    """Files under root with the suffix (any when None), sorted by relative path; hidden folders skipped."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _SKIPPED_FOLDERS and name[0] != "."]
        found += [Path(folder, name) for name in names if suffix is None or name.endswith(suffix)]
    return sorted(found, key=lambda file: file.relative_to(root).as_posix())


def _read(files: list[Path], max_bytes: int, source: str) -> tuple[bytes, int]:
    """Concatenate the text files in order up to max_bytes; returns (bytes, files used)."""
    chunks: list[bytes] = []
    total = used = 0
    for file in files:
        if total >= max_bytes:
            break
        text = _read_text(file, max_bytes - total)
        if text:
            chunks.append(text)
            total += len(text)
            used += 1
    if total < VALIDATION_EVERY:
        raise ExecutorConfigError(f"data: {source} holds no text to train on ({total} bytes)")
    return b"".join(chunks), used


def _read_text(file: Path, limit: int) -> bytes:
    """Up to limit bytes of file, or b"" when it looks binary."""
    try:
        with file.open("rb") as handle:
            head = handle.read(min(_SNIFF_BYTES, limit))
            if b"\0" in head:
                return b""
            return head + handle.read(limit - len(head))
    except OSError as error:
        raise ExecutorConfigError(f"data: cannot read {file}: {error.strerror or error}") from None


def _split_blocks(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Every VALIDATION_EVERY-th block to validation, the rest to training (see the module docstring)."""
    everything = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    block = min(BLOCK_BYTES, len(data) // VALIDATION_EVERY)
    blocks = torch.arange(len(data)) // block
    is_val = blocks % VALIDATION_EVERY == VALIDATION_EVERY - 1
    return everything[~is_val].clone(), everything[is_val].clone()

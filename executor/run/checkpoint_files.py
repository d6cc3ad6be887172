"""Checkpoint files on disk: where they live, how each is proven whole, which to resume from, which to keep.

    runs/NAME/checkpoints/step-000010/rank0.pt     what rank 0 held at its cut after 10 optimizer steps
    runs/NAME/checkpoints/step-000010/rank0.json   the marker, written last and atomically:
        {"step": 9, "rank": 0, "time": ..., "bytes": ..., "sha256": ...}

A folder is named by the optimizer steps done (1-based, as metrics.jsonl and the progress line count);
the marker's "step" is the IR's 0-based index of the last step in it. A checkpoint is *complete* when
every rank's marker exists, and *good* when, besides, every rank's .pt has the size and SHA-256 its
marker records. Resuming takes the newest good one; a newer one that is not good is skipped with a
one-line warning. Rank 0 prunes after each of its saves: every step folder older than the newest
`keep` complete ones goes. Ranks save in step order, so a folder older than a complete one is never
still being written.

    from executor.run.checkpoint_files import find_checkpoint
    found = find_checkpoint(Path("runs/a/checkpoints"), ranks=4, warn=print)   # (step, folder) or None
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from traces.io import write_atomic

PREFIX = "step-"


def step_folder(root: Path, step: int) -> Path:
    """The folder of the checkpoint at the cut of `step` (0-based index), named by steps done."""
    return Path(root) / f"{PREFIX}{step + 1:06d}"


def step_label(step: int) -> str:
    """How messages name that checkpoint: after N steps (N = index + 1)."""
    return f"step {step + 1}"


class _HashingWriter:
    """A file wrapper that hashes and counts what torch.save writes through it (one pass, no re-read)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.sha256, self.bytes = handle, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def write_rank_file(root: Path, step: int, rank: int, state: dict[str, Any], time: float) -> None:
    """Save one rank's state: any old marker removed first, the .pt through a temp file, the marker last."""
    target = step_folder(root, step)
    target.mkdir(parents=True, exist_ok=True)
    (target / f"rank{rank}.json").unlink(missing_ok=True)  # a rewrite is incomplete until its new marker
    tmp = target / f".rank{rank}.pt.tmp"
    with tmp.open("wb") as handle:
        writer = _HashingWriter(handle)
        torch.save(state, writer)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target / f"rank{rank}.pt")
    marker = {"step": step, "rank": rank, "time": time, "bytes": writer.bytes}
    marker["sha256"] = writer.sha256.hexdigest()
    write_atomic(target / f"rank{rank}.json", json.dumps(marker) + "\n")


class _Unpickler(pickle.Unpickler):
    """Reads a rank file written before the executor had rooms: its messages' class was then
    executor.program.Message, the same fields as schedules.semantics.Message."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED.get(module, module), name)


MOVED = {"executor.program": "schedules.semantics"}
"""Module of a class named in an older rank file -> where that class lives now."""
_PICKLE = types.ModuleType("checkpoint_pickle")
_PICKLE.Unpickler, _PICKLE.load = _Unpickler, pickle.load


def read_rank_file(folder: Path, rank: int, device: torch.device) -> dict[str, Any]:
    """What `write_rank_file` wrote for `rank` into the checkpoint folder `folder`, tensors on `device`."""
    return torch.load(
        folder / f"rank{rank}.pt", map_location=device, weights_only=False, pickle_module=_PICKLE
    )


def _marker(folder: Path, rank: int) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / f"rank{rank}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("step"), int) else None


def complete_checkpoints(root: Path, ranks: int) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint whose ranks all wrote their marker, oldest first (cheap)."""
    found = []
    for folder in Path(root).glob(f"{PREFIX}*") if Path(root).is_dir() else []:
        markers = [_marker(folder, rank) for rank in range(ranks)]
        if all(markers) and len({m["step"] for m in markers}) == 1:
            found.append((markers[0]["step"], folder))
    return sorted(found)


def problem(folder: Path, ranks: int) -> str | None:
    """Why the checkpoint in `folder` cannot be resumed from (None: it is good). Reads every file once."""
    for rank in range(ranks):
        marker = _marker(folder, rank)
        if marker is None:
            return f"rank{rank}.json is missing or unreadable"
        if "sha256" not in marker:
            return f"rank{rank}.json records no digest"
        data = folder / f"rank{rank}.pt"
        try:
            size = data.stat().st_size
            if size != marker["bytes"]:
                return f"rank{rank}.pt has {size} bytes, its marker says {marker['bytes']}"
            if _sha256(data) != marker["sha256"]:
                return f"rank{rank}.pt does not match the digest in its marker"
        except OSError as error:
            return f"rank{rank}.pt cannot be read ({error.strerror or error})"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def find_checkpoint(
    root: Path, ranks: int, warn: Callable[[str], None] | None = None
) -> tuple[int, Path] | None:
    """(step, folder) of the newest good checkpoint; each newer complete but bad one is skipped with a
    one-line warning (`warn`)."""
    for step, folder in reversed(complete_checkpoints(root, ranks)):
        why = problem(folder, ranks)
        if why is None:
            return step, folder
        if warn is not None:
            warn(f"checkpoint {folder.name} is damaged ({why}); skipping it")
    return None


def checkpoint_time(folder: Path, ranks: int) -> float:
    """The latest cut time over the ranks: a resumed run's clock continues from there."""
    return max(_marker(folder, rank)["time"] for rank in range(ranks))


def checkpoint_step(folder: Path) -> int:
    """The 0-based step index of a checkpoint folder, from any of its markers."""
    for marker_path in sorted(Path(folder).glob("rank*.json")):
        marker = _marker(folder, int(marker_path.stem[4:]))
        if marker is not None:
            return marker["step"]
    raise FileNotFoundError(f"{folder} holds no checkpoint marker")


def prune(root: Path, ranks: int, keep: int) -> None:
    """Delete every step folder older than the newest `keep` complete checkpoints."""
    complete = complete_checkpoints(root, ranks)
    if len(complete) <= keep:
        return
    oldest_kept = complete[-keep][0]
    for folder in Path(root).glob(f"{PREFIX}*"):
        if _index(folder) < oldest_kept:
            shutil.rmtree(folder, ignore_errors=True)


def _index(folder: Path) -> int:
    """The 0-based step index a folder's name stands for (a name that is not ours: never pruned)."""
    try:
        return int(folder.name[len(PREFIX) :]) - 1
    except ValueError:
        return 1 << 62

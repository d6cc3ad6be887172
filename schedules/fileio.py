"""Atomic text-file writes for the schedule package (standard library only).

    from schedules.fileio import write_atomic
    write_atomic("runs/1f1b.csv", text)

A reader never sees a half-written file: the text goes to a temporary file in the same folder, is flushed
to disk, then renamed over the target (a rename within one file system is atomic).
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from schedules.errors import OutputError


def check_writable(path: str | os.PathLike) -> Path:
    """Raise OutputError (one line) unless a file could be written at `path`: call it for every output
    before the work, so that a bad path costs nothing and leaves nothing half-done."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write in {folder} (permission denied)")
    return path


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to path through a temporary sibling file and a rename; create missing folders.
    OutputError (one line) for a path that cannot take a file; an OSError while writing (a full disk)
    leaves the old file as it was."""
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it an ordinary file's mode
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic structures (schedules, traces).

    A million small objects (actions, events) that live until the end would be walked again by every
    collection, which costs more than building them; reference counting still frees everything and the
    collector resumes after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

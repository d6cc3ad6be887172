"""The run folder: what a real run leaves behind, its lock, and the per-rank logs it is assembled from.

    runs/NAME/config.json       the RunConfig and a description of the training data, atomic
    runs/NAME/metrics.jsonl     one object per optimizer step (executor.run.monitor)
    runs/NAME/trace.json        the measured trace (traces/ format), atomic
    runs/NAME/ranks/rank*.jsonl each rank's own log, appended in batches as it goes (every step and
                                every quarter second); a resumed run appends to it (a new "start"
                                record), so nothing that ran is lost
    runs/NAME/checkpoints/      see executor.run.checkpoint_files
    runs/NAME/launcher.log      torchrun's own output (pipesim run only)
    runs/NAME/lock              held (flock) while a run owns the folder

A rank log holds one JSON object per line: {"t": "start" | "event" | "loss" | "val" | "cut" | "end", ...}.
executor.run.monitor reads the logs as they grow, merges the segments of a stopped and resumed run, and
writes metrics.jsonl and trace.json from them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from executor.errors import ExecutorConfigError
from executor.run.runconfig import RunConfig, read_folder_config
from schedules import Action
from traces.io import write_atomic


class RunFolder:
    """Paths inside one run folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    trace = property(lambda self: self.path / "trace.json")
    ranks = property(lambda self: self.path / "ranks")
    checkpoints = property(lambda self: self.path / "checkpoints")
    log = property(lambda self: self.path / "launcher.log")
    lock_file = property(lambda self: self.path / "lock")

    def rank_log(self, rank: int) -> Path:
        return self.ranks / f"rank{rank}.jsonl"

    def write_config(self, config: RunConfig, extra: dict[str, Any]) -> None:
        data = {"config": config.to_dict(), **extra}
        write_atomic(self.config, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> RunConfig:
        return read_folder_config(self.path, "run folder")[0]


class FolderLock:
    """An exclusive flock on runs/NAME/lock for as long as a run owns the folder. The kernel drops it
    when the last process holding the descriptor ends, however it ends (a SIGKILL included). A study
    folder (executor.study.store.StudyFolder) is locked the same way: `folder` needs `path` and
    `lock_file`."""

    def __init__(self, folder: RunFolder, owner: str) -> None:
        self.fd = os.open(folder.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise ExecutorConfigError(
                f"{folder.path} is in use by another run ({holder}); wait for it to end or stop it"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{owner}, pid {os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def new_segment() -> str:
    """A fresh launch id for the rank logs' start records."""
    return uuid.uuid4().hex[:12]


class DivergedError(RuntimeError):
    """A loss came out inf or nan: the run stops rather than train on (and write) garbage."""


def op_text(op) -> str:
    """An op in the IR's text form (`1F2@s3v3`); the executor's own ops (validation, NORM, CUT) in the
    same notation: `CUT@s3`, `0EVAL_F1@s3`. Anything else (a phase name) as it is."""
    if isinstance(op, Action) or not hasattr(op, "kind"):
        return str(op)
    stage = "" if op.stage < 0 else str(op.stage)
    microbatch = "" if op.microbatch is None else str(op.microbatch)
    return f"{stage}{op.kind}{microbatch}" + (f"@s{op.step}" if op.step else "")


class RankLog:
    """A rank's append-only log (the Runtime's recorder).

    Records are kept in memory and written in batches, one write each: at every step boundary (the
    runtime's CUT op), at every beat of the rank's watchdog (executor.run.watchdog, a quarter of a second at
    most), and on every way out that runs Python (`end`, which every stop calls, and `flush`). A rank
    killed outright loses at most the records since the last of these; every line written is whole.
    Writes may come from two threads (the watchdog flushes, and ends the log when it stops the rank).
    """

    def __init__(self, path: Path, rank: int, *, resume: int | None = None, segment: str | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.rank = path, rank
        self.guard = threading.Lock()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.pending: list[tuple | dict | str] = []
        """Records not written yet, in order: event tuples and objects (formatted when written), lines."""
        if os.fstat(self.fd).st_size > 0 and not _ends_with_newline(path):
            self.pending.append("\n")  # the last segment died mid-line: keep that line apart
        start: dict[str, Any] = {"t": "start", "rank": rank, "pid": os.getpid(), "wall": time.time()}
        if hasattr(os, "sched_getaffinity"):
            start["cpus"] = sorted(os.sched_getaffinity(0))  # where it may run (pinned: its own)
        if resume is not None:
            start["resume"] = resume  # the step index of the checkpoint this segment starts from
        if segment is not None:
            start["segment"] = segment  # the launch, the same on every rank (executor.run.monitor)
        self.write(start)
        self.flush()  # the launcher follows the rank's pid from here on

    def write(self, record: dict[str, Any]) -> None:
        """Keep a record (a JSON object; its values finite) for the next flush."""
        self.pending.append(record)

    def flush(self) -> None:
        """Write every record kept so far, in one write."""
        with self.guard:
            count = len(self.pending)  # the main thread may append meanwhile: those stay for the next
            if not count or self.fd < 0:
                return
            lines = [_event_line(*r) if type(r) is tuple else _line(r) for r in self.pending[:count]]
            del self.pending[:count]
            data = "".join(lines).encode()
            while data:
                data = data[os.write(self.fd, data) :]

    def beat(self) -> None:
        """A sign of life (the launcher reads the log's modification time), with what ran meanwhile."""
        with contextlib.suppress(OSError, ValueError):
            self.flush()
            os.utime(self.path)

    def event(self, index: int, op, start: float, end: float, moved: int, memory: int | None) -> None:
        """Keep an action's event as it comes (a tuple: its line is made when written, off the op's path)."""
        self.pending.append((index, op, start, end, moved, memory))

    def loss(self, step: int, microbatch: int, loss: float, time: float) -> None:
        _check_finite("loss", loss, step, f", microbatch {microbatch}")
        self.write({"t": "loss", "step": step, "microbatch": microbatch, "loss": loss, "time": time})

    def val(self, step: int, loss: float, time: float) -> None:
        _check_finite("validation loss", loss, step, "")
        self.write({"t": "val", "step": step, "loss": loss, "time": time})

    def cut(self, step: int, time: float) -> None:
        self.write({"t": "cut", "step": step, "time": time})
        self.flush()

    def end(self, status: str, **details: Any) -> None:
        self.write({"t": "end", "status": status, "wall": time.time(), **details})
        self.flush()
        with self.guard:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _event_line(index: int, op, start: float, end: float, moved: int, memory: int | None) -> str:
    """An event's line: what json.dumps writes for {"t": "event", "i", "a", "s", "e", "b", "m"}, built
    directly (a line per action: where actions are cheap, its making is a part of the step time)."""
    text = str(op)
    if '"' in text or "\\" in text or not text.isprintable():  # never the IR's text
        text = json.dumps(text)[1:-1]
    memory = "null" if memory is None else int(memory)
    return (
        f'{{"t":"event","i":{int(index)},"a":"{text}","s":{float(start)!r},"e":{float(end)!r},'
        f'"b":{int(moved)},"m":{memory}}}\n'
    )


def _line(record: dict | str) -> str:
    """Any other kept record as its line: an object as JSON, a string as it is."""
    if isinstance(record, str):
        return record
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def _check_finite(what: str, value: float, step: int, where: str) -> None:
    if not math.isfinite(value):
        raise DivergedError(
            f"the {what} became {value} at step {step + 1}{where}: the training diverged "
            "(a lower --lr, or --grad-clip, may help)"
        )


def one_line(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The metrics lines of a run folder ([] when there is none); ValueError on a line that is not JSON."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

"""The run folder: what a real run leaves behind, and the per-rank logs it is assembled from.

    runs/NAME/config.json       the RunConfig (everything needed to reproduce the run), atomic
    runs/NAME/metrics.jsonl     one object per optimizer step: step, loss, val_loss (when measured),
                                tokens_per_s, time (seconds since the start)
    runs/NAME/trace.json        the measured trace (traces/ format), atomic
    runs/NAME/ranks/rank*.jsonl each rank's own log, appended and flushed as it goes (survives a crash)
    runs/NAME/checkpoints/      see executor.checkpoint

A rank log holds one JSON object per line: {"t": "start" | "event" | "loss" | "val" | "cut" | "end", ...}.
The launcher (or the single-process loop) reads the logs as they grow (`Monitor.poll`) to print progress
and append metrics, and merges them into trace.json at the end, also after a failure.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.runconfig import RunConfig
from schedules import Schedule, parse_action
from traces.io import write_atomic, write_trace
from traces.schema import Event, ScheduleHeader, Trace, stream_of


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

    def rank_log(self, rank: int) -> Path:
        return self.ranks / f"rank{rank}.jsonl"

    def write_config(self, config: RunConfig, extra: dict[str, Any]) -> None:
        data = {"config": config.to_dict(), **extra}
        write_atomic(self.config, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> RunConfig:
        return RunConfig.from_dict(json.loads(self.config.read_text(encoding="utf-8"))["config"])


class RankLog:
    """A rank's append-only log (the Runtime's recorder). Every line is flushed when written."""

    def __init__(self, path: Path, rank: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.handle = path.open("w", encoding="utf-8")
        self.write({"t": "start", "rank": rank, "pid": os.getpid(), "wall": time.time()})

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.handle.flush()

    def event(self, index: int, op, start: float, end: float, moved: int, memory: int | None) -> None:
        self.write({"t": "event", "i": index, "a": str(op), "s": start, "e": end, "b": moved, "m": memory})

    def loss(self, step: int, microbatch: int, loss: float, time: float) -> None:
        self.write({"t": "loss", "step": step, "mb": microbatch, "loss": loss, "time": time})

    def val(self, step: int, loss: float, time: float) -> None:
        self.write({"t": "val", "step": step, "loss": loss, "time": time})

    def cut(self, step: int, time: float) -> None:
        self.write({"t": "cut", "step": step, "time": time})

    def end(self, status: str, **details: Any) -> None:
        self.write({"t": "end", "status": status, "wall": time.time(), **details})
        self.handle.close()


@dataclass
class RankState:
    """What the monitor knows about one rank so far."""

    pid: int | None = None
    events: list[dict] = field(default_factory=list)
    last_index: int = -1
    end: dict | None = None
    offset: int = 0


class Monitor:
    """Follows the rank logs: progress, metrics.jsonl, and trace.json at the end."""

    def __init__(self, folder: RunFolder, config: RunConfig, schedule: Schedule, *, time_offset: float = 0.0):
        self.folder, self.config, self.schedule = folder, config, schedule
        self.ranks = [RankState() for _ in range(schedule.ranks)]
        self.losses: dict[int, dict[int, float]] = {}
        self.loss_time: dict[int, float] = {}
        self.vals: dict[int, float] = {}
        self.metrics: list[dict[str, Any]] = []
        self.time_offset = time_offset
        self.tokens_per_step = config.microbatches * config.microbatch_size * config.model_config.seq_len
        self.val_steps = config.val_steps()

    def poll(self) -> bool:
        """Read whatever the ranks wrote since the last call; True if anything was new."""
        new = False
        for rank, state in enumerate(self.ranks):
            for record in self._new_records(rank, state):
                new = True
                self._take(state, record)
        self._complete_steps()
        return new

    def _new_records(self, rank: int, state: RankState) -> list[dict]:
        path = self.folder.rank_log(rank)
        try:
            with path.open("rb") as handle:
                handle.seek(state.offset)
                data = handle.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        state.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def _take(self, state: RankState, record: dict) -> None:
        kind = record["t"]
        if kind == "start":
            state.pid = record["pid"]
        elif kind == "event":
            state.events.append(record)
            state.last_index = record["i"]
        elif kind == "loss":
            self.losses.setdefault(record["step"], {})[record["mb"]] = record["loss"]
            self.loss_time[record["step"]] = max(self.loss_time.get(record["step"], 0.0), record["time"])
        elif kind == "val":
            self.vals[record["step"]] = record["loss"]
        elif kind == "end":
            state.end = record

    def _complete_steps(self) -> None:
        while True:
            step = len(self.metrics)
            if step >= self.config.steps or len(self.losses.get(step, {})) < self.config.microbatches:
                return
            if step in self.val_steps and step not in self.vals:
                return
            self._add_metrics(step)

    def _add_metrics(self, step: int) -> None:
        losses = self.losses[step]
        time = self.loss_time[step] + self.time_offset
        previous = self.metrics[-1]["time"] if self.metrics else self.time_offset
        line: dict[str, Any] = {"step": step, "loss": sum(losses[j] for j in sorted(losses)) / len(losses)}
        if step in self.vals:
            line["val_loss"] = self.vals[step]
        line["tokens_per_s"] = self.tokens_per_step / max(time - previous, 1e-9)
        line["time"] = time
        self.metrics.append(line)
        with self.folder.metrics.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")

    def seed_metrics(self, lines: list[dict[str, Any]]) -> None:
        """A resumed run starts with the steps already written (and rewrites the file with them)."""
        self.metrics = list(lines)
        self.write_metrics()

    def write_metrics(self) -> None:
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in self.metrics)
        write_atomic(self.folder.metrics, text)

    def trace(self, meta: dict[str, Any]) -> Trace:
        events = []
        for rank, state in enumerate(self.ranks):
            for record in state.events:
                action = parse_action(record["a"])
                event = Event(
                    rank=rank,
                    action=action,
                    start=record["s"],
                    end=max(record["e"], record["s"]),
                    stream=stream_of(action),
                    bytes=record["b"],
                    memory=record["m"],
                )
                events.append((event.start, rank, record["i"], event))
        events.sort(key=lambda item: item[:3])
        return Trace(
            source="measured",
            schedule=ScheduleHeader.of(self.schedule),
            events=tuple(item[3] for item in events),
            meta=meta,
        )

    def write_trace(self, meta: dict[str, Any]) -> None:
        write_trace(self.folder.trace, self.trace(meta))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The metrics lines of a run folder ([] when there is none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

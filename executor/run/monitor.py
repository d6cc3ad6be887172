"""Follow a run's rank logs and assemble metrics.jsonl and trace.json from them, across stops and resumes.

    from executor.run.monitor import Monitor
    monitor = Monitor(folder, config, schedule)
    monitor.poll()                  # read what the ranks wrote since; metrics.jsonl kept up to date
    monitor.write_trace(run_meta(config, completed=monitor.completed))

Used by `pipesim run` (while it follows its ranks), by rank 0 of a run started through torchrun by
hand, and by `pipesim collect`. Everything is derived from the logs, so it can be rebuilt at any time.

Note: a log is a sequence of segments, one per start of the rank, each tagged with its launch. A
resumed segment starts from the checkpoint of step k; once the resumed run has really started (every
rank's segment of that launch has run an action), each replaces whatever the earlier segments recorded
after their cut of step k: work that the stop threw away and the resumed run does again.

    segment 0:  start  ev ev loss ev | cut(k) | ev ev loss ev ...(stopped)
    segment 1:  start(resume=k)                  ev ev loss ev ... end
    merged:     ev ev loss ev | cut(k) | ev ev loss ev ... end   (every action that ran, once)

A resumed run that fails before then (a rank cannot restore its checkpoint) changes nothing; the first
segment of a new run is merged at its first action (it replaces nothing).

metrics.jsonl counts steps from 1, as the progress line does: {"step": N} is the state after N
optimizer steps, whose actions carry the IR's 0-based index N - 1 in the trace (`@s<N-1>`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from executor.run.runconfig import RunConfig
from executor.run.runfolder import RunFolder, read_metrics
from schedules import Schedule, parse_action
from traces.io import write_atomic, write_trace
from traces.schema import Event, ScheduleHeader, Trace, stream_of


@dataclass
class Segment:
    """One start of one rank: what it recorded, and whether it ran anything."""

    id: str | None
    """The launch it belongs to, the same on every rank (None in logs written without one)."""
    resume: int | None
    """The step index of the checkpoint it started from (None: from the start)."""
    records: list[dict] = field(default_factory=list)
    """Its event, loss, val and cut records."""
    ran: bool = False
    """Whether it ran an action."""


@dataclass
class RankState:
    """What the monitor knows about one rank so far."""

    pid: int | None = None
    """The process of the current segment."""
    segments: list[Segment] = field(default_factory=list)
    """Every segment of the log, in order."""
    merged: list[bool] = field(default_factory=list)
    """Per segment: whether it is part of the merged view."""
    records: list[dict] = field(default_factory=list)
    """The merged view: the event, loss, val and cut records of every action that counts."""
    end: dict | None = None
    """The current segment's end record."""
    last_index: int = -1
    """The index of the last action the current segment ran (-1: none yet)."""
    offset: int = 0
    """Bytes of the log read so far."""
    heard: float = 0.0
    """When (time.monotonic) the last record of this rank was read."""

    @property
    def starts(self) -> int:
        return len(self.segments)

    @property
    def resume(self) -> int | None:
        return self.segments[-1].resume if self.segments else None


class Monitor:
    """Follows the rank logs: progress, metrics.jsonl, and trace.json."""

    def __init__(self, folder: RunFolder, config: RunConfig, schedule: Schedule, *, write: bool = True):
        self.folder, self.config, self.schedule, self.write = folder, config, schedule, write
        self.ranks = [RankState() for _ in range(schedule.ranks)]
        self.losses: dict[int, dict[int, tuple[float, float]]] = {}
        self.vals: dict[int, float] = {}
        self.metrics: list[dict[str, Any]] = []
        self.tokens_per_step = config.microbatches * config.microbatch_size * config.model_config.seq_len
        self.val_steps = config.val_steps()
        self.actions = sum(len(actions) for actions in schedule.actions)
        try:
            self.written: list[dict[str, Any]] | None = read_metrics(folder.metrics)
        except ValueError:  # a torn line: rewrite the file on the first change
            self.written = None

    def poll(self) -> bool:
        """Read whatever the ranks wrote since the last call; True if anything was new."""
        new = changed = False
        for rank, state in enumerate(self.ranks):
            for record in self._new_records(rank, state):
                new, state.heard = True, time.monotonic()
                changed |= self._take(state, record)
        if changed:
            self._merge()
        self._complete_steps()
        if new:
            self.sync_metrics()
        return new

    def _new_records(self, rank: int, state: RankState) -> list[dict]:
        try:
            with self.folder.rank_log(rank).open("rb") as handle:
                handle.seek(state.offset)
                data = handle.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        state.offset += len(complete)
        records = []
        for line in complete.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short when its process died: nothing to take from it
                continue
        return records

    def _take(self, state: RankState, record: dict) -> bool:
        """Add one record; True when the segments changed (a start, a first action): merge again."""
        kind = record.get("t")
        if kind == "start":
            state.pid, state.end, state.last_index = record.get("pid"), None, -1
            state.segments.append(Segment(id=record.get("segment"), resume=record.get("resume")))
            state.merged.append(False)
            return True
        if kind == "end":
            state.end = record
            return False
        if not state.segments:  # a log without its start line: take it as one segment
            state.segments.append(Segment(id=None, resume=None))
            state.merged.append(False)
        segment = state.segments[-1]
        if kind == "event":
            state.last_index = record["i"]
        ran = kind == "event" or not self.config.trace  # untraced (--no-trace): losses and cuts tell
        first = ran and not segment.ran
        segment.ran = segment.ran or ran
        segment.records.append(record)
        if state.merged[-1]:
            state.records.append(record)
            self._note(record)
        return first

    def _merge(self) -> None:
        """Recompute every rank's merged view (see the module's note), then what derives from it."""
        started = {
            segment.id
            for segment in self.ranks[0].segments
            if segment.id is not None
            and all(any(s.id == segment.id and s.ran for s in state.segments) for state in self.ranks)
        }
        for state in self.ranks:
            view: list[dict] = []
            for index, segment in enumerate(state.segments):
                first = not view and segment.resume is None  # a new run: nothing to replace
                state.merged[index] = segment.ran and (segment.id in started or first)
                if state.merged[index]:
                    view = _before_cut(view, segment.resume) + segment.records
            state.records = view
        self.losses, self.vals, self.metrics = {}, {}, []
        for state in self.ranks:
            for record in state.records:
                self._note(record)

    def _note(self, record: dict) -> None:
        if record["t"] == "loss":
            microbatch = record["microbatch"] if "microbatch" in record else record["mb"]  # "mb": older logs
            self.losses.setdefault(record["step"], {})[microbatch] = (record["loss"], record["time"])
        elif record["t"] == "val":
            self.vals[record["step"]] = record["loss"]

    def _complete_steps(self) -> None:
        while True:
            step = len(self.metrics)
            if step >= self.config.steps or len(self.losses.get(step, {})) < self.config.microbatches:
                return
            if step in self.val_steps and step not in self.vals:
                return
            self.metrics.append(self._line(step))

    def _line(self, step: int) -> dict[str, Any]:
        losses = self.losses[step]
        time = max(at for _, at in losses.values())
        previous = self.metrics[-1]["time"] if self.metrics else 0.0
        mean = sum(value for value, _ in losses.values()) / len(losses)
        line: dict[str, Any] = {"step": step + 1, "loss": _finite(mean)}
        if step in self.vals:
            line["val_loss"] = _finite(self.vals[step])
        line["tokens_per_s"] = self.tokens_per_step / max(time - previous, 1e-9)
        line["time"] = time
        return line

    def sync_metrics(self) -> None:
        """Bring metrics.jsonl up to date: append the new lines, or rewrite it when lines were replaced."""
        if not self.write or (self.written is not None and self.metrics == self.written):
            return
        if self.written is not None and self.metrics[: len(self.written)] == self.written:
            with self.folder.metrics.open("a", encoding="utf-8") as handle:
                handle.writelines(_json_line(line) for line in self.metrics[len(self.written) :])
        else:
            write_atomic(self.folder.metrics, "".join(_json_line(line) for line in self.metrics))
        self.written = list(self.metrics)

    @property
    def events(self) -> int:
        return sum(1 for state in self.ranks for record in state.records if record["t"] == "event")

    @property
    def completed(self) -> bool:
        """Every rank ended well and every action of the schedule ran (once); untraced (--no-trace),
        every step's metrics are there."""
        ended = all(s.end is not None and s.end.get("status") == "ok" for s in self.ranks)
        ran = self.events == self.actions if self.config.trace else len(self.metrics) == self.config.steps
        return ended and all(s.merged and s.merged[-1] for s in self.ranks) and ran

    def trace(self, meta: dict[str, Any]) -> Trace:
        events = []
        for rank, state in enumerate(self.ranks):
            for record in (r for r in state.records if r["t"] == "event"):
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


def _before_cut(records: list[dict], step: int | None) -> list[dict]:
    """The records up to and including the last cut of `step` (none when the segment started afresh)."""
    if step is not None:
        for index in range(len(records) - 1, -1, -1):
            if records[index]["t"] == "cut" and records[index]["step"] == step:
                return records[: index + 1]
    return []


def _finite(value: float) -> float | None:
    """JSON has no NaN: a value that is not finite is written as null."""
    return value if math.isfinite(value) else None


def _json_line(line: dict[str, Any]) -> str:
    return json.dumps(line, sort_keys=True, allow_nan=False) + "\n"


def run_meta(config: RunConfig, *, completed: bool, **extra: Any) -> dict[str, Any]:
    """The trace's meta block of a measured run."""
    backend = "local" if config.single_process else ("nccl" if config.device == "cuda" else "gloo")
    return {
        "device": config.device,
        "backend": backend,
        "clock": "CUDA events" if config.device == "cuda" else "perf_counter_ns, offsets to rank 0 estimated",
        "seed": config.seed,
        "torch": torch.__version__,
        **(
            {"gpu": torch.cuda.get_device_name()}
            if config.device == "cuda" and torch.cuda.is_available()
            else {}
        ),
        "completed": completed,
        **extra,
        "workload": {
            "microbatch_size": config.microbatch_size,
            "sequence_length": config.model_config.seq_len,
            "data_parallel": 1,
        },
        "config": config.to_dict(),
    }

"""The monitor's merge of a rank log's segments: what a resumed run replaces, and when; the same result
however the logs are read (all at once by `pipesim collect`, line by line by a running launcher).

Run: .venv/bin/pytest tests/executor/test_monitor.py
"""

from __future__ import annotations

import json
from itertools import zip_longest

from executor.run.monitor import Monitor
from executor.run.runconfig import RunConfig
from executor.run.runfolder import RankLog, RunFolder

CONFIG = RunConfig(schedule="1f1b", stages=2, microbatches=1, steps=3, val_every=0)


def start(segment: str, resume: int | None = None) -> dict:
    record = {"t": "start", "pid": 1, "segment": segment}
    return record if resume is None else {**record, "resume": resume}


def event(index: int, text: str) -> dict:
    return {"t": "event", "i": index, "a": text, "s": 0.0, "e": 0.0, "b": 0, "m": 0}


def cut(step: int) -> dict:
    return {"t": "cut", "step": step, "time": 0.0}


def loss(step: int, value: float) -> dict:
    return {"t": "loss", "step": step, "mb": 0, "loss": value, "time": float(step)}


# A run stopped in step 1 (segment a), a resume from step 0 that dies while rank 1 restores (b), and a
# resume from step 0 that runs (c). Event texts name the segment, so the merged view shows which counted.
LOGS = [
    [start("a"), event(0, "a0"), cut(0), event(2, "a2"), start("b", 0), event(2, "b2"), start("c", 0),
     event(2, "c2"), cut(1)],
    [start("a"), loss(0, 5.0), event(0, "a0"), cut(0), loss(1, 4.0), event(2, "a2"), start("b", 0),
     {"t": "end", "status": "error", "op": "set-up", "message": "restoring"}, start("c", 0),
     loss(1, 4.5), event(2, "c2"), cut(1)],
]  # fmt: skip


def merged(monitor: Monitor) -> list[list[str]]:
    return [[r.get("a", r["t"]) for r in state.records if r["t"] != "loss"] for state in monitor.ranks]


def test_a_resumed_run_replaces_the_tail_after_its_checkpoint_only_once_every_rank_runs(tmp_path):
    folder = RunFolder(tmp_path)
    folder.ranks.mkdir()
    monitor = Monitor(folder, CONFIG, CONFIG.build_schedule())
    views = []
    for lines in zip_longest(*LOGS):  # line by line, the ranks interleaved, a poll after each round
        for rank, record in enumerate(lines):
            if record is not None:
                with folder.rank_log(rank).open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
        monitor.poll()
        views.append(merged(monitor))
    # a's tail stays while b has not started on every rank, and b never counts; c replaces a's tail
    assert [["a0", "cut", "a2"], ["a0", "cut", "a2"]] in views
    assert all("b2" not in rank for view in views for rank in view)
    assert views[-1] == [["a0", "cut", "c2", "cut"], ["a0", "cut", "c2", "cut"]]
    assert [line["loss"] for line in monitor.metrics] == [5.0, 4.5]  # step 2's loss from c, not a

    at_once = Monitor(folder, CONFIG, CONFIG.build_schedule(), write=False)  # as `pipesim collect` reads
    at_once.poll()
    assert merged(at_once) == views[-1] and at_once.metrics == monitor.metrics


def test_loss_records_name_the_microbatch_and_older_logs_still_read(tmp_path):
    """A rank log writes `microbatch`; a log from before says `mb`: both give the same metrics."""
    lines = []
    for name in ("new", "old"):
        folder = RunFolder(tmp_path / name)
        for rank in range(CONFIG.stages):
            log = RankLog(folder.rank_log(rank), rank, segment="a")
            log.write(event(0, "a0"))  # the segment ran
            if rank == CONFIG.stages - 1:
                for step in range(CONFIG.steps):
                    log.loss(step, 0, 3.0 - step, float(step))
            log.flush()
        if name == "old":  # rewrite the last rank's log as an older version wrote it
            path = folder.rank_log(CONFIG.stages - 1)
            records = [json.loads(line) for line in path.read_text().splitlines()]
            assert all("microbatch" in r and "mb" not in r for r in records if r["t"] == "loss")
            old = [{**r, "mb": r.pop("microbatch")} if r["t"] == "loss" else r for r in records]
            path.write_text("".join(json.dumps(r) + "\n" for r in old))
        monitor = Monitor(folder, CONFIG, CONFIG.build_schedule(), write=False)
        monitor.poll()
        lines.append([line["loss"] for line in monitor.metrics])
    assert lines[0] == lines[1] == [3.0, 2.0, 1.0]

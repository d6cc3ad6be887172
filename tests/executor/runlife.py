"""Helpers of the run-life tests: start `pipesim run` as a real process, wait for it, look at a folder.

Not a test module (no test_ prefix): imported by test_stop_resume.py and test_runlife_distributed.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from executor.run.runfolder import read_metrics
from traces.io import read_trace

ROOT = Path(__file__).resolve().parents[2]


def start_pipesim(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`pipesim ...` as its own process group (as a shell job is), output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipesim", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_steps(folder: Path, steps: int, process: subprocess.Popen | None = None, limit: float = 180.0):
    """Wait until metrics.jsonl holds `steps` lines (the run is training); fail if the process ends first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if len(read_metrics(folder / "metrics.jsonl")) >= steps:
                return
        except ValueError:  # a line being written
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended early ({process.returncode}): {process.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no {steps} steps in {folder} after {limit} s")


def alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def rank_pids(folder: Path) -> list[int]:
    """The pid of every start record of every rank log (every segment)."""
    pids = []
    for log in sorted((folder / "ranks").glob("rank*.jsonl")):
        for line in log.read_text().splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("t") == "start":
                pids.append(record["pid"])
    return pids


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children first."""
    found, todo = [], [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(kid) for kid in children.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(map(alive, pids)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def snapshot(folder: Path, skip: tuple[str, ...] = ("config.json", "lock")) -> dict[str, str]:
    """Digest of every file under the folder (but the ones a resume may rewrite)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in skip
    }


def forge(checkpoint: Path, rank: int, content: bytes) -> None:
    """Replace a rank's checkpoint file by `content` with a marker that vouches for it: intact on disk,
    unreadable by torch (as a file written by another program would be)."""
    (checkpoint / f"rank{rank}.pt").write_bytes(content)
    marker_path = checkpoint / f"rank{rank}.json"
    marker = json.loads(marker_path.read_text())
    marker.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
    marker_path.write_text(json.dumps(marker) + "\n")


def trace_per_rank(folder: Path) -> tuple[dict, dict[int, list[str]]]:
    """(meta, rank -> its actions in time order) of the folder's trace."""
    trace = read_trace(folder / "trace.json")
    actions: dict[int, list[str]] = {}
    for event in trace.events:
        actions.setdefault(event.rank, []).append(str(event.action))
    return trace.meta, actions


def assert_every_action_that_ran(folder: Path, schedule, *, complete: bool) -> None:
    """The trace holds, per rank, a prefix of its action list (all of it when complete), each once."""
    meta, actions = trace_per_rank(folder)
    assert meta["completed"] is complete
    for rank, expected in enumerate(schedule.actions):
        ran = actions.get(rank, [])
        assert ran == [str(action) for action in expected[: len(ran)]], f"rank {rank}"
        assert (len(ran) == len(expected)) if complete else ran, f"rank {rank}: {len(ran)} actions"
    assert not list(folder.glob("trace.segment*"))

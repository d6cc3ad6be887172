"""`pipesim run`'s watch over torchrun and its ranks: follow the logs, notice a stop, a failure or a stall,
and leave no process behind.

    supervisor = Supervisor(process, config, monitor, on_progress, stop_requested)
    try:
        supervisor.follow()            # returns when torchrun ended, a signal came, or the run must stop
    finally:
        supervisor.kill_all()          # every rank and torchrun, by pid and process group
    message = supervisor.failure(plans)

Note: how fast each way of going wrong ends every process (T = --timeout):

    a rank fails or dies           its error (or its missing pid) is seen   -> all killed FAIL_GRACE later
    a rank stalls in an action     its own watchdog ends it at T            -> as above
    a rank freezes (SIGSTOP, ...)  its log stops beating                    -> all killed at T + BEAT_GRACE
    pipesim run gets a signal      at the next poll (0.1 s)                 -> all killed at once

torchrun alone would wait 30 s between its SIGTERM and its SIGKILL; killing by pid does not wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from executor.run.monitor import Monitor
from executor.run.runconfig import RunConfig
from executor.run.runfolder import op_text
from executor.run.watchdog import alive

POLL = 0.1
"""Seconds between two looks at the logs."""
FAIL_GRACE = 1.0
"""Seconds the other ranks get, after one failed, to end on their own (and say why) before the kill."""
BEAT_GRACE = 1.0
"""Seconds beyond --timeout that a rank's log may go without a sign of life before it counts as stalled."""
START_GRACE = 60.0
"""Seconds beyond --timeout for the first rank to start (torchrun and `import torch` can be slow)."""
FROZEN = 2.0
"""Seconds without a sign of life after which a rank still alive when the run is stopped counts as
stalled (it beats every half second; this is four beats missed)."""


class Supervisor:
    """Follows one torchrun of one run folder (see the module docstring)."""

    def __init__(
        self,
        process: subprocess.Popen,
        config: RunConfig,
        monitor: Monitor,
        on_progress: Callable[[], None],
        stop_requested: Callable[[], bool],
    ) -> None:
        self.process, self.config, self.monitor = process, config, monitor
        self.on_progress, self.stop_requested = on_progress, stop_requested
        self.segments = [state.starts for state in monitor.ranks]  # the segments before this launch
        self.stalled: dict[int, float] = {}
        self.quiet: dict[int, float] = {}
        self.killed: set[int] = set()
        self.code: int | None = None

    def ours(self, rank: int) -> bool:
        """Whether the rank's current segment is this launch's."""
        return self.monitor.ranks[rank].starts > self.segments[rank]

    def follow(self) -> None:
        started, failing_since = time.monotonic(), None
        while not self.stop_requested():
            if self.monitor.poll():
                self.on_progress()
            if self.process.poll() is not None:
                self.code = self.process.returncode
                return
            now = time.monotonic()
            self.stalled = self._stalled(self.config.timeout + BEAT_GRACE)
            if self.stalled:
                return
            if failing_since is None and self._failing():
                failing_since = now
            if failing_since is not None and now - failing_since > FAIL_GRACE:
                return
            if not any(map(self.ours, range(len(self.segments)))) and now - started > self._start_limit():
                return
            time.sleep(POLL)

    def _start_limit(self) -> float:
        return self.config.timeout + START_GRACE

    def _failing(self) -> bool:
        """A rank of this launch ended with an error, or its process is gone without a word."""
        for rank, state in enumerate(self.monitor.ranks):
            if not self.ours(rank):
                continue
            if state.end is not None and state.end.get("status") != "ok":
                return True
            if state.end is None and state.pid is not None and not alive(state.pid):
                return True
        return False

    def _stalled(self, limit: float) -> dict[int, float]:
        """Ranks of this launch, alive and not finished, whose log has not beaten for `limit` seconds."""
        found = {}
        for rank, state in enumerate(self.monitor.ranks):
            if self.ours(rank) and state.end is None and state.pid is not None:
                silent = _silence(self.monitor.folder.rank_log(rank))
                if silent > limit and alive(state.pid):
                    found[rank] = silent
        return found

    def _quiet(self) -> dict[int, float]:
        """Ranks alive and not finished that have recorded nothing for longer than --timeout: stuck in
        one action, their own watchdog about to say so when a peer's failure ended the run first."""
        now, found = time.monotonic(), {}
        for rank, state in enumerate(self.monitor.ranks):
            waiting = self.ours(rank) and state.end is None and state.pid is not None
            if waiting and now - state.heard > self.config.timeout and alive(state.pid):
                found[rank] = now - state.heard
        return found

    def kill_all(self) -> None:
        """SIGKILL every rank still alive (by the pid it logged, and torchrun's children) and torchrun."""
        self.monitor.poll()
        self.stalled = {**self._stalled(FROZEN), **self.stalled}  # frozen, though a peer failed first
        self.quiet = self._quiet()
        pids = {state.pid: rank for rank, state in enumerate(self.monitor.ranks) if self.ours(rank)}
        for pid in _children(self.process.pid):
            pids.setdefault(pid, None)
        for pid, rank in pids.items():
            if pid is not None and alive(pid) and _kill(pid) and rank is not None:
                self.killed.add(rank)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.code is None:
            self.code = self.process.returncode

    def failure(self, plans) -> str | None:
        """None when every rank finished; else one clause per rank that did not, root causes first."""
        clauses = []
        for rank, state in enumerate(self.monitor.ranks):
            if self.ours(rank) and state.end is not None and state.end.get("status") == "ok":
                continue
            clauses.append(self._clause(rank, state, plans[rank]))
        if not clauses:
            return None if self.code == 0 else f"torchrun exited with code {self.code}"
        return "; ".join(text for _, text in sorted(clauses, key=lambda item: item[0]))

    def _clause(self, rank: int, state, plan) -> tuple[int, str]:
        on = _next_op(state, plan)
        if not self.ours(rank):
            return 4, f"rank {rank} never started (see launcher.log)"
        if rank in self.stalled:
            return 0, f"rank {rank} stalled on {on} (no sign of life for {self.stalled[rank]:.0f} s; killed)"
        if rank in self.quiet and state.end is None:
            return 0, f"rank {rank} stalled on {on} (no progress for {self.quiet[rank]:.0f} s; killed)"
        if state.end is not None and state.end.get("op") == "set-up":
            return 1, f"rank {rank} failed while setting up: {state.end.get('message')}"
        if state.end is not None:
            return 2, f"rank {rank} stopped on {state.end.get('op')} ({state.end.get('message')})"
        if rank in self.killed:
            return 3, f"rank {rank} was still on {on} when the run was stopped"
        return 1, f"rank {rank} ended without a word (crashed or killed) on {on}: see launcher.log"


def _next_op(state, plan) -> str:
    """The text form of the op the rank's current segment was on (the one after its last event)."""
    if state.last_index >= 0:
        index = state.last_index + 1
    else:
        index = plan.cuts[state.resume] + 1 if state.resume is not None else 0
    return op_text(plan.ops[index]) if index < len(plan.ops) else "the end of its program"


def _silence(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _children(pid: int) -> list[int]:
    """torchrun's child processes (Linux /proc), so that a rank not yet logged is not left behind."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(child) for child in children.read_text().split()]
    return found

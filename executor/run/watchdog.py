"""A rank's watchdog: it stops the rank when an action stalls or when whoever started it is gone, and
shows that the rank is alive.

    watchdog = Watchdog(rank, log, timeout=60.0, launcher=launcher_pid)
    watchdog.started(op)                # before each action (a before_op hook, executor.interpreter.hooks)

One daemon thread, every BEAT seconds at most:
- stalled: the current action has run for more than `timeout` seconds -> the log ends with status
  "error" naming the action ("stalled ..."), the process exits with 124. A rank waiting for a peer
  (a receive, a sum over ranks) waits WAIT_MARGIN longer, here and in torch.distributed: so when one
  rank stalls, it is the one that says so, and its peers fail at once on its exit;
- orphaned: torchrun (this process's parent) or the `pipesim run` that started it has died (a SIGKILL of
  its process group, a crash) -> the rank ends rather than train on with nobody to follow it;
- alive: the log's modification time is refreshed. A rank frozen as a whole (SIGSTOP, a hang holding the
  interpreter) stops refreshing it, which is how the launcher tells a stalled rank within --timeout.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

from executor.run.runfolder import RankLog, op_text

BEAT = 0.25
"""Seconds between two looks (and two signs of life), at most."""
WAIT_MARGIN = 2.0
"""Seconds beyond --timeout that a rank waits for a peer (see the module docstring)."""


class Watchdog:
    """Stops the process when the current action stalls or its launcher is gone; beats meanwhile."""

    def __init__(self, rank: int, log: RankLog, timeout: float, launcher: int | None = None) -> None:
        self.rank, self.log, self.timeout, self.launcher = rank, log, timeout, launcher
        self.parent = os.getppid()
        self.current: tuple[object, float | None] | None = None  # (op, deadline)
        self.before_exit = None  # rank 0 of a hand-started run: write the trace before leaving
        self.period = min(BEAT, timeout / 4)
        threading.Thread(target=self._watch, daemon=True).start()

    def started(self, op, *, waiting: bool = False) -> None:
        """An action starts: it may run `timeout` seconds, or wait WAIT_MARGIN longer for a peer."""
        self.current = (op, time.monotonic() + self.timeout + (WAIT_MARGIN + 1.0 if waiting else 0.0))

    def idle(self, phase: str) -> None:
        """Between actions (set-up, the end): no timeout, the phase named if the launcher goes away."""
        self.current = (phase, None)

    def _watch(self) -> None:
        while True:
            time.sleep(self.period)
            self.log.beat()
            op, deadline = self.current if self.current is not None else ("its set-up", None)
            if deadline is not None and time.monotonic() > deadline:
                message = f"stalled: no progress for {self.timeout:g} s (--timeout)"
                stop(self.rank, self.log, op, message, 124, self.before_exit)
            gone = self._gone()
            if gone:
                stop(self.rank, self.log, op, f"{gone} is gone; stopping with it", 143, self.before_exit)

    def _gone(self) -> str | None:
        if os.getppid() != self.parent:
            return f"torchrun (pid {self.parent})"
        if self.launcher is not None and not alive(self.launcher):
            return f"the launcher (pipesim run, pid {self.launcher})"
        return None


def alive(pid: int) -> bool:
    """Whether a process runs: a zombie (killed, not yet reaped by its parent) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc here, or the process is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def stop(rank: int, log: RankLog, op, message: str, code: int, before_exit=None) -> None:
    """Record why this rank stops, say it in one line, and leave at once (no hanging collective)."""
    text = op_text(op)
    with contextlib.suppress(OSError, ValueError):
        log.end("error", op=text, message=message)
    with contextlib.suppress(OSError, ValueError):
        print(f"pipesim: rank {rank} stopped on {text}: {message}", file=sys.stderr, flush=True)
    if before_exit is not None:
        with contextlib.suppress(Exception):
            before_exit()
    os._exit(code)

"""Assemble a run folder from its rank logs: rank 0 of a run started through torchrun by hand does it as it
runs, and `pipesim collect DIR` does it afterwards (say, after every process of a run was killed).

    from executor.run.collect import collect
    monitor = collect(RunFolder("runs/a"))        # metrics.jsonl and trace.json written from the logs

Under `pipesim run` the launcher follows the logs itself (executor.run.launch); a hand-started torchrun has
no launcher, so rank 0 starts a Collector: a thread that polls the logs every second (metrics.jsonl and
the progress line as the steps complete) and writes trace.json when the run ends, however it ends.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from executor.run.monitor import Monitor, run_meta
from executor.run.progress import Progress, print_summary
from executor.run.runconfig import RunConfig
from executor.run.runfolder import FolderLock, RunFolder
from schedules import Schedule

POLL_SECONDS = 1.0
"""How often rank 0 reads the logs: often enough for a live metrics.jsonl, rare enough to cost nothing."""


def collect(folder: RunFolder) -> Monitor:
    """Rewrite metrics.jsonl and trace.json from the rank logs; refuses a folder a run owns."""
    with FolderLock(folder, "pipesim collect"):
        config = folder.read_config()
        monitor = Monitor(folder, config, config.build_schedule())
        monitor.poll()
        monitor.sync_metrics()
        monitor.write_trace(run_meta(config, completed=monitor.completed))
    return monitor


class Collector:
    """Rank 0's view of a hand-started run: follows every rank's log in a thread."""

    def __init__(self, folder: RunFolder, config: RunConfig, schedule: Schedule, err: TextIO = sys.stderr):
        self.folder, self.config = folder, config
        self.monitor = Monitor(folder, config, schedule)
        self.monitor.poll()
        self.progress = Progress(config, err, start=len(self.monitor.metrics), tty=False)
        self.guard, self.finish_guard = threading.Lock(), threading.Lock()
        self.started = time.monotonic()
        self.done = threading.Event()
        self.finishing = False
        self.result: bool | None = None
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        while not self.done.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        with self.guard:
            if self.monitor.poll():
                self.progress.show(self.monitor)

    def finish(self, *, wait: float, out: TextIO = sys.stdout) -> bool:
        """Wait up to `wait` seconds for every rank's last word, then write metrics and trace; True when
        the run completed (then the summary is printed). Called once; a second caller gets the result."""
        self.finishing = True
        with self.finish_guard:
            if self.result is None:
                self.result = self._finish(wait, out)
        return self.result

    def _finish(self, wait: float, out: TextIO) -> bool:
        self.done.set()
        deadline = time.monotonic() + wait
        while True:
            self.poll()
            if all(state.end is not None for state in self.monitor.ranks) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        with self.guard:
            completed = self.monitor.completed
            self.monitor.sync_metrics()
            self.monitor.write_trace(run_meta(self.config, completed=completed, launcher="torchrun by hand"))
        if completed:
            print_summary(self.config, self.folder, self.monitor, time.monotonic() - self.started, out)
        return completed

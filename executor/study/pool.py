"""Run a study's tasks on a process pool over the cores, with a progress bar; Ctrl-C stops cleanly.

    from executor.study.pool import ProgressBar, run_tasks
    bar = ProgressBar(len(tasks), label="study")
    run_tasks(tasks, work, jobs=2, done=bar)     # `work` a module-level function (it is pickled)

Each task writes its own result file atomically in the worker (executor.study.store), so the main
process only counts. Workers are spawned (not forked: the parent may hold torch's thread pools) and
ignore SIGINT; on Ctrl-C the main process terminates them and re-raises KeyboardInterrupt. A run cut
short this way never wrote its file (at most a hidden temporary one), so the next invocation runs it
again and skips every run that finished.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeVar

Task = TypeVar("Task")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_tasks(
    tasks: Iterable[Task], work: Callable[[Task], Any], *, jobs: int, done: Callable[[Any], None]
) -> None:
    """Call work(task) for every task, `jobs` at a time; done(result) as each finishes (any order)."""
    tasks = list(tasks)
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            done(work(task))
        return
    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks)), initializer=_ignore_sigint)
    try:
        for result in pool.imap_unordered(work, tasks, chunksize=1):
            done(result)
        pool.close()
    except BaseException:  # Ctrl-C, or a task that raised: stop every worker now
        pool.terminate()
        raise
    finally:
        pool.join()


class ProgressBar:
    """`study [#####.........] 12/40  3.1 min left` on stderr: in place on a terminal, else every tenth."""

    def __init__(self, total: int, *, label: str = "study", stream: TextIO | None = None) -> None:
        self.total, self.count, self.label = total, 0, label
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.started = time.monotonic()

    def __call__(self, _result: Any = None) -> None:
        self.count += 1
        tenth = max(1, self.total // 10)
        if not (self.terminal or self.count == self.total or self.count % tenth == 0):
            return
        filled = 30 * self.count // max(1, self.total)
        elapsed = time.monotonic() - self.started
        left = elapsed / self.count * (self.total - self.count)
        end = "\r" if self.terminal and self.count < self.total else "\n"
        self.stream.write(
            f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total}"
            f"  {left / 60:.1f} min left{end}"
        )
        self.stream.flush()

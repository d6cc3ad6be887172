"""Run a study's tasks on a process pool over the cores, with a progress bar; Ctrl-C stops cleanly.

    from executor.study.pool import ProgressBar, run_tasks
    bar = ProgressBar(len(tasks), label="study")
    run_tasks(tasks, work, jobs=2, done=bar)     # `work` a module-level function (it is pickled)

Each task writes its own result file atomically in the worker (executor.study.store), so the main
process only counts. Workers are spawned (not forked: the parent may hold torch's thread pools) and
ignore SIGINT; on Ctrl-C, SIGTERM or SIGHUP the main process terminates them and raises
KeyboardInterrupt. A worker whose main process died without a word (SIGKILL) notices within a second
and exits. A run cut short either way never wrote its file (at most a hidden temporary one), so the
next invocation runs it again and skips every run that finished.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

Task = TypeVar("Task")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a study like Ctrl-C does (a closed terminal, `kill`, `timeout`, a job scheduler)."""


def _start_worker() -> None:
    """A worker leaves Ctrl-C to the main process, and exits when the main process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _interrupt(number: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {number}")


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread while the pool runs (only the main
    thread may set handlers; a pool started elsewhere keeps the process's own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _interrupt) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_tasks(
    tasks: Iterable[Task], work: Callable[[Task], Any], *, jobs: int, done: Callable[[Any], None]
) -> None:
    """Call work(task) for every task, `jobs` at a time; done(result) as each finishes (any order)."""
    tasks = list(tasks)
    with _stop_signals_interrupt():  # in this process too, so --jobs 1 stops as Ctrl-C does
        if jobs <= 1 or len(tasks) <= 1:
            for task in tasks:
                done(work(task))
            return
        pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks)), initializer=_start_worker)
        try:
            for result in pool.imap_unordered(work, tasks, chunksize=1):
                done(result)
            pool.close()
        except BaseException:  # Ctrl-C or another stop signal, or a task that raised: stop every worker
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

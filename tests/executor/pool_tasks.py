"""Tasks for the study pool's tests, in a module that imports nothing heavy (spawned workers import it)."""

from __future__ import annotations

import time


def slow_square(value: int) -> int:
    time.sleep(0.2 * value)
    return value * value


def own_pid(seconds: float) -> int:
    """Write this worker's pid to the folder in POOL_PIDS, then sleep: a task that is still running."""
    import os
    from pathlib import Path

    Path(os.environ["POOL_PIDS"], str(os.getpid())).touch()
    time.sleep(seconds)
    return os.getpid()


def main() -> None:
    """A study pool of two workers on long tasks (run as a script by the stop-signal tests)."""
    import os

    from executor.study.pool import run_tasks

    try:
        jobs = int(os.environ.get("POOL_JOBS", "2"))
        run_tasks([60.0, 60.0], own_pid, jobs=jobs, done=lambda _: None)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

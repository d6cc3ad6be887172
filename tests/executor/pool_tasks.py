"""Tasks for the study pool's tests, in a module that imports nothing heavy (spawned workers import it)."""

from __future__ import annotations

import time


def slow_square(value: int) -> int:
    time.sleep(0.2 * value)
    return value * value

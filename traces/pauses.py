"""Steps of a measured run whose pauses hold work outside the schedule: validation and checkpoints.

    from traces.pauses import paused_steps
    paused_steps(trace)      # frozenset({9, 10, 11}) for 12 steps validated every 10; None: not known

The executor validates after step k when (k + 1) is a multiple of --val-every and after the last step,
and saves a checkpoint after step k when (k + 1) is a multiple of --checkpoint-every, except the last:
`validation_steps` and `checkpoint_steps` here, which the executor's RunConfig calls too (the trace's
meta carries the run's config). That work is not in the schedule, so it shows in the trace as long
gaps in step k, and before the first actions of step k + 1 on the ranks that wait for it: both steps are
marked. Calibration takes the host's time between actions from the other steps only (traces.calibrate).
"""

from __future__ import annotations

from typing import Any

from traces.schema import Trace


def paused_steps(trace: Trace) -> frozenset[int] | None:
    """The steps with validation or a checkpoint in or just before them; None when the trace does not
    say (no run config in its meta: simulated, imported)."""
    config: Any = trace.meta.get("config")
    if not isinstance(config, dict):
        return None
    steps = trace.schedule.steps
    work = validation_steps(steps, _count(config.get("val_every")))
    work |= checkpoint_steps(steps, _count(config.get("checkpoint_every")))
    return frozenset(after for step in work for after in (step, step + 1) if after < steps)


def validation_steps(steps: int, every: int) -> frozenset[int]:
    """The steps a run of `steps` validates after, every `every` steps and after the last (0: never)."""
    if every <= 0:
        return frozenset()
    return frozenset(step for step in range(steps) if (step + 1) % every == 0 or step == steps - 1)


def checkpoint_steps(steps: int, every: int) -> frozenset[int]:
    """The steps a run saves a checkpoint after: every `every` steps, never after the last (0: never)."""
    if every <= 0:
        return frozenset()
    return frozenset(step for step in range(steps - 1) if (step + 1) % every == 0)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

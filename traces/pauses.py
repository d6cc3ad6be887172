"""Steps of a measured run whose pauses hold work outside the schedule: validation and checkpoints.

    from traces.pauses import paused_steps
    paused_steps(trace)      # frozenset({9, 10, 11}) for 12 steps validated every 10; None: not known

The executor validates after step k when (k + 1) is a multiple of --val-every and after the last step,
and saves a checkpoint after step k when (k + 1) is a multiple of --checkpoint-every, except the last
(executor.run.runconfig.RunConfig.val_steps and checkpoint_steps; the trace's meta carries the run's
config). That work is not in the schedule, so it shows in the trace as long gaps in step k, and before
the first actions of step k + 1 on the ranks that wait for it: both steps are marked. Calibration takes
the host's time between actions from the other steps only (traces.calibrate).
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
    val_every = _count(config.get("val_every"))
    checkpoint_every = _count(config.get("checkpoint_every"))
    marked: set[int] = set()
    for step in range(steps):
        validates = val_every > 0 and ((step + 1) % val_every == 0 or step == steps - 1)
        saves = checkpoint_every > 0 and step < steps - 1 and (step + 1) % checkpoint_every == 0
        if validates or saves:
            marked |= {step, step + 1}
    return frozenset(step for step in marked if step < steps)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

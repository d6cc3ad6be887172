"""The study's presets: `quick` checks the machinery in a few minutes, `paper` is the documented grid.

    from executor.study.presets import preset
    study = preset("paper")          # a StudyConfig; `pipesim study` flags replace its fields

Both run every schedule (1F1B as the synchronous reference, PipeDream with both learning-rate rules,
2BW, AMDP) and every optimizer variant (AdamW, NAdamW, Muon, basis rotation, AdamW + PipeMare, AdamW
and Muon + the one-step delay correction), plus an lr probe: AdamW and Muon at a third of their swept lr
on 1F1B and 2BW, which asks whether a smaller lr closes 2BW's gap and what it costs in time to target.
"""

from __future__ import annotations

from executor.errors import ExecutorConfigError
from executor.study.grid import StudyConfig

SWEEP = {
    "adamw": (1e-3, 3e-3, 1e-2),
    "nadamw": (1e-3, 3e-3, 1e-2),
    "muon": (3e-3, 1e-2, 3e-2),
    "basis-rotation": (1e-3, 3e-3, 1e-2),
}
"""The paper preset's lr sweep per optimizer: half-decades around each one's usual lr (Muon's lr is
rescaled to AdamW's RMS by the executor, so its grid sits only a little higher)."""


def quick() -> StudyConfig:
    """Two depths, two seeds, 12 steps of a 4-layer GPT of width 32: about a minute on two idle cores."""
    return StudyConfig(
        depths=(2, 4),
        seeds=(0, 1),
        steps=12,
        microbatches=4,
        microbatch_size=4,
        layers=4,
        hidden=32,
        val_every=4,
        val_microbatches=2,
        warmup_steps=2,
        pipemare_steps=4,
        lr_grid={name: lrs[:2] for name, lrs in SWEEP.items()},
        probe_scale=1 / 3,
        probe_variants=("muon",),
        probe_schedules=("2bw",),
        timing_steps=3,
    )


def paper() -> StudyConfig:
    """P = 2, 4, 8, three seeds, 200 steps of m = 8 microbatches of an 8-layer GPT (docs/study/)."""
    return StudyConfig(
        depths=(2, 4, 8),
        seeds=(0, 1, 2),
        steps=200,
        microbatches=8,
        microbatch_size=4,
        layers=8,
        val_every=10,
        val_microbatches=8,
        warmup_steps=10,
        pipemare_steps=50,
        lr_grid=dict(SWEEP),
        probe_scale=1 / 3,
        probe_variants=("adamw", "muon"),
        probe_schedules=("2bw",),
        timing_steps=4,
    )


PRESETS = {"quick": quick, "paper": paper}


def preset(name: str) -> StudyConfig:
    if name not in PRESETS:
        raise ExecutorConfigError(f"--preset: unknown {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()

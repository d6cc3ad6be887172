"""The study's grid: which runs it makes, and the RunConfig of each (the fair-comparison rules live here).

    from executor.study.grid import cells, preset, run_config
    study = preset("quick")
    for cell in cells(study):
        config = run_config(study, cell, lrs={"adamw": 3e-3, ...})   # an ordinary executor RunConfig

A *cell* is one training run: a schedule, an optimizer variant (an optimizer, maybe with a staleness
correction), a depth P, a seed, and for PipeDream the learning-rate rule. The rules that keep the
comparison fair, in one place:

- Equal tokens: every schedule trains `steps` steps of m microbatches on the same batches (a batch is a
  pure function of seed, step and microbatch), so step k has seen the same tokens everywhere.
- PipeDream updates once per microbatch (m updates per step, each from one microbatch, loss scale 1);
  the others once per step. Two learning-rate rules, both run for PipeDream: `per-update` (the
  reference's lr for every update) and `per-token` (lr / m per update: the same lr per token seen).
  Where a schedule updates once per step the two rules are the same run (`both`).
- The same learning-rate schedule in tokens: warm-up, cosine decay and PipeMare's T_c are given in steps
  and converted to the schedule's updates (x m for PipeDream).
- The lr of each optimizer comes from the sweep on the synchronous reference (or --lr), never per
  schedule; a correction uses its base optimizer's lr.
- A correction runs on the schedules where it changes something and was designed for: PipeMare on
  PipeDream (its scaling lr / tau^(...) is 1 where tau <= 1: 2BW and AMDP), the one-step delay
  correction on 2BW (AMDP has delay 0; PipeDream's delay is not one step).

1F1B and 2BW compute the same numbers at every depth (`depth_free`): their cells run once, at the
smallest depth (`runs`), and every depth's row reads that run (`source`); their step times still differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from executor.errors import ExecutorConfigError
from executor.run.runconfig import RunConfig
from executor.training.optim import CORRECTIONS, OPTIMIZERS, OptimizerConfig
from schedules import Schedule, Versioning, build
from schedules.semantics import loss_scale

CORRECTION_SCHEDULES = {"pipemare": ("pipedream",), "delay": ("2bw",)}
"""The schedules each correction runs on (see the module docstring for why)."""
LR_RULES = ("per-update", "per-token")
"""PipeDream's two learning-rate rules; a schedule that updates once per step runs one cell, `both`."""


@dataclass(frozen=True, kw_only=True)
class Variant:
    """An optimizer and its staleness correction, written `adamw` or `adamw+pipemare`."""

    optimizer: str
    """Base optimizer (executor.training.optim.OPTIMIZERS)."""
    correction: str = "none"
    """Staleness correction (executor.training.optim.CORRECTIONS)."""

    @property
    def name(self) -> str:
        return self.optimizer if self.correction == "none" else f"{self.optimizer}+{self.correction}"

    @classmethod
    def parse(cls, text: str) -> Variant:
        optimizer, _, correction = text.strip().partition("+")
        if optimizer not in OPTIMIZERS:
            raise ExecutorConfigError(f"--optimizers: unknown optimizer {optimizer!r} in {text!r}")
        if correction and (correction not in CORRECTIONS or correction == "none"):
            choices = ", ".join(c for c in CORRECTIONS if c != "none")
            raise ExecutorConfigError(f"--optimizers: unknown correction {correction!r} ({choices})")
        return cls(optimizer=optimizer, correction=correction or "none")


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One training run of the grid."""

    schedule: str
    """Schedule name."""
    variant: str
    """Optimizer variant, `adamw` or `adamw+pipemare` (Variant.parse)."""
    stages: int
    """Depth P."""
    seed: int
    """Seed of the weights and the batches."""
    lr_rule: str = "both"
    """`per-update`, `per-token` (PipeDream), or `both` where they coincide (one update per step)."""
    lr_scale: float = 1.0
    """Multiplies the optimizer's swept lr (the lr probe: 1/3), for this cell and its reference."""

    @property
    def name(self) -> str:
        """File stem: schedule-variant[-per-token][-lrx0.333]-pP-sSEED."""
        rule = "-per-token" if self.lr_rule == "per-token" else ""
        scale = f"-lrx{self.lr_scale:.3g}" if self.lr_scale != 1.0 else ""
        return f"{self.schedule}-{self.variant}{rule}{scale}-p{self.stages}-s{self.seed}"

    @property
    def optimizer(self) -> str:
        return Variant.parse(self.variant).optimizer

    def reference(self, schedule: str) -> Cell:
        """The synchronous run this cell's gap is measured against: base optimizer, same P, seed, lr."""
        return Cell(
            schedule=schedule,
            variant=self.optimizer,
            stages=self.stages,
            seed=self.seed,
            lr_scale=self.lr_scale,
        )


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """Everything that decides a study's numbers (study.json); --jobs and the outputs are not in it."""

    schedules: tuple[str, ...] = ("1f1b", "pipedream", "2bw", "amdp")
    """Schedules compared; the first is the synchronous reference."""
    variants: tuple[str, ...] = (
        "adamw",
        "nadamw",
        "muon",
        "basis-rotation",
        "adamw+pipemare",
        "adamw+delay",
        "muon+delay",
    )
    """Optimizer variants; corrections run only where CORRECTION_SCHEDULES says."""
    depths: tuple[int, ...] = (2, 4, 8)
    """Pipeline depths P."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds; every cell runs once per seed."""
    steps: int = 200
    """Training steps of m microbatches (equal tokens for every schedule)."""
    microbatches: int = 8
    """m, the same at every depth (AMDP needs a multiple of P, 2BW m >= P)."""
    microbatch_size: int = 4
    """Sequences per microbatch."""
    model: str = "tiny"
    """Executor model preset."""
    layers: int | None = 8
    """Transformer blocks (at least the largest P); None: the preset's."""
    hidden: int | None = None
    """Width override; None: the preset's."""
    seq_len: int | None = None
    """Context length override, in tokens; None: the preset's."""
    data: str | None = None
    """Text file or folder; None: the Python standard library's sources."""
    val_every: int = 10
    """Validation every this many steps (and after the last)."""
    val_microbatches: int = 4
    """Validation microbatches per measurement (the same fixed batches every time, per seed)."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Settings every cell shares (betas, eps, momentum, weight decay, corrections' constants, ...);
    its name, lr, correction, warm-up, decay and PipeMare horizon are set per cell."""
    warmup_steps: int = 10
    """Linear warm-up, in steps (x updates per step for PipeDream)."""
    decay: bool = True
    """Cosine decay to optimizer.min_lr_ratio x lr over the whole run."""
    pipemare_steps: int = 50
    """PipeMare's T_c, in steps (x m updates for PipeDream)."""
    lr_grid: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """The sweep: learning rates tried per base optimizer on the reference at the smallest depth."""
    sweep_extend: int = 2
    """How many times the sweep may look one half-decade past an edge of lr_grid (executor.study.sweep)."""
    lrs: dict[str, float] = field(default_factory=dict)
    """Fixed learning rates per base optimizer (--lr); these optimizers skip the sweep."""
    lr_rules: tuple[str, ...] = LR_RULES
    """PipeDream's learning-rate rules to run."""
    probe_scale: float | None = None
    """The lr probe: also run probe_variants on probe_schedules at lr x this (None: no probe)."""
    probe_variants: tuple[str, ...] = ()
    """Variants of the lr probe (those among `variants`)."""
    probe_schedules: tuple[str, ...] = ()
    """Schedules of the lr probe (those among `schedules`; the reference is added: the gap needs it)."""
    target: float | None = None
    """Target validation loss; None: the reference's with the first variant at target_fraction."""
    target_fraction: float = 0.8
    """Where in the budget the reference's validation loss defines the target."""
    timing_steps: int = 4
    """Steps of each short measured run that times a schedule on this CPU (0: no CPU timing)."""

    @property
    def reference(self) -> str:
        return self.schedules[0]

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        data = dict(data)
        optimizer = dict(data.pop("optimizer"))
        if optimizer.get("betas") is not None:
            optimizer["betas"] = tuple(optimizer["betas"])
        tuples = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
        data = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        data["lr_grid"] = {k: tuple(v) for k, v in data.get("lr_grid", {}).items()}
        return cls(optimizer=OptimizerConfig(**optimizer), **data)


def json_ready(value: Any) -> Any:
    """Tuples as lists, recursively (what json.loads gives back)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


@lru_cache(maxsize=64)
def _schedule(schedule: str, stages: int, microbatches: int) -> Schedule:
    return build(schedule, stages, microbatches, steps=1)


def updates_per_step(schedule: str, stages: int, microbatches: int) -> int:
    """Updates each stage applies per step: m for PipeDream (loss scale 1), else 1 (schedules.semantics)."""
    return round(microbatches * loss_scale(_schedule(schedule, stages, microbatches)))


def depth_free(study: StudyConfig, schedule: str) -> bool:
    """Whether a run of `schedule` computes the same numbers at every depth P.

    Note: true for flushes (every depth is gradient accumulation over the same m microbatches) and for
    2BW (W(k+1) = W(k) - lr U(gradient at W(k-1)) on every stage), as the executor's tests prove and
    the study's test checks bit for bit. Not with anything that looks at the stages: per-stage clipping
    (asynchronous schedules clip each stage by its own norm) or nadamw's per-stage beta1.
    """
    versioning = _schedule(schedule, 2, study.microbatches).versioning
    if study.optimizer.nesterov_per_stage:
        return False
    if versioning is Versioning.FLUSH:
        return True
    return versioning is Versioning.DOUBLE_BUFFER and study.optimizer.grad_clip == 0


def source(study: StudyConfig, cell: Cell) -> Cell:
    """The run that holds a cell's numbers: itself, or for a depth-free schedule the smallest depth's."""
    if cell.stages != min(study.depths) and depth_free(study, cell.schedule):
        return dataclasses.replace(cell, stages=min(study.depths))
    return cell


def runs(study: StudyConfig) -> list[Cell]:
    """The cells that are run (each depth-free cell once, at the smallest depth), in grid order."""
    return list(dict.fromkeys(source(study, cell) for cell in cells(study)))


def applies(variant: str, schedule: str, reference: str) -> bool:
    """Whether the grid runs this variant on this schedule (corrections: CORRECTION_SCHEDULES)."""
    correction = Variant.parse(variant).correction
    if correction == "none":
        return True
    return schedule != reference and schedule in CORRECTION_SCHEDULES.get(correction, ())


def rules_for(study: StudyConfig, schedule: str, stages: int) -> tuple[str, ...]:
    if updates_per_step(schedule, stages, study.microbatches) == 1:
        return ("both",)
    return study.lr_rules


def cells(study: StudyConfig) -> list[Cell]:
    """Every run of the grid (probe included), depth-major, then seed, schedule, variant, rule."""
    found = []
    probe = set(study.probe_schedules) | {study.reference} if study.probe_scale else set()
    probe_variants = [v for v in study.probe_variants if v in study.variants]
    for stages in study.depths:
        for seed in study.seeds:
            for schedule in study.schedules:
                plan = [(variant, 1.0) for variant in study.variants]
                if schedule in probe:
                    plan += [(variant, study.probe_scale) for variant in probe_variants]
                for variant, scale in plan:
                    if not applies(variant, schedule, study.reference):
                        continue
                    for rule in rules_for(study, schedule, stages):
                        cell = Cell(
                            schedule=schedule, variant=variant, stages=stages, seed=seed, lr_rule=rule
                        )
                        found.append(dataclasses.replace(cell, lr_scale=scale))
    return found


def base_optimizers(study: StudyConfig) -> list[str]:
    """Base optimizers of the variants, in order: the ones that need an lr."""
    names = [Variant.parse(v).optimizer for v in study.variants]
    return list(dict.fromkeys(names))


def cell_lr(study: StudyConfig, cell: Cell, base_lr: float) -> float:
    """The lr per update of a cell: the optimizer's lr x the probe scale (/ m: PipeDream's per-token rule)."""
    lr = base_lr * cell.lr_scale
    if cell.lr_rule == "per-token":
        lr /= updates_per_step(cell.schedule, cell.stages, study.microbatches)
    return lr


def run_config(study: StudyConfig, cell: Cell, base_lr: float) -> RunConfig:
    """The executor's RunConfig of a cell (single process, one thread, no run folder of its own)."""
    variant = Variant.parse(cell.variant)
    per_step = updates_per_step(cell.schedule, cell.stages, study.microbatches)
    optimizer = dataclasses.replace(
        study.optimizer,
        name=variant.optimizer,
        correction=variant.correction,
        lr=cell_lr(study, cell, base_lr),
        warmup_steps=study.warmup_steps * per_step,
        total_steps=study.steps * per_step if study.decay else None,
        pipemare_steps=max(1, study.pipemare_steps * per_step),
    )
    return RunConfig(
        schedule=cell.schedule,
        stages=cell.stages,
        microbatches=study.microbatches,
        steps=study.steps,
        model=study.model,
        layers=study.layers,
        hidden=study.hidden,
        seq_len=study.seq_len,
        microbatch_size=study.microbatch_size,
        optimizer=optimizer,
        data=study.data,
        seed=cell.seed,
        val_every=study.val_every,
        val_microbatches=study.val_microbatches,
        single_process=True,
        threads=1,
    )

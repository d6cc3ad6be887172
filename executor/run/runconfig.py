"""RunConfig: everything a real run needs, checked before any process starts (one-line errors).

    from executor.run.runconfig import RunConfig, validate
    config = RunConfig(schedule="2bw", stages=2, microbatches=8, steps=50, out="runs/a")
    checked = validate(config)          # ExecutorConfigError on the first problem found

config.json in a run folder is `config.to_dict()`; `RunConfig.from_dict` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from executor.errors import ExecutorConfigError
from executor.interpreter.program import RankPlan, build_plans, stuck_ranks
from executor.training.data import load_corpus
from executor.training.model import GPTConfig, model_config, split_layers
from executor.training.optim import OptimizerConfig
from schedules import Schedule, ScheduleError, build, get_info
from schedules.imported import schedule_from_text
from schedules.registry import check_request
from traces.pauses import checkpoint_steps, validation_steps

DEVICES = ("cpu", "cuda")
RUN_ONLY_FIELDS = ("out", "resume", "timeout", "single_process", "keep_checkpoints", "pin")
"""Fields a resumed run may change: where it writes, how it waits, how it is launched, what it keeps."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run of one schedule on real hardware.

    Gradient clipping (optimizer.grad_clip > 0): synchronous schedules (all but pipedream, 2bw and amdp)
    clip every stage by the global norm over all stages, as single-process training does (a NORM op sums
    the ranks' shares before the step's updates). Asynchronous schedules (pipedream, 2bw, amdp) clip
    each stage by its own norm: their stages update at different times, so no global norm is defined.
    """

    schedule: str = "1f1b"
    """Schedule name (see `pipesim schedules list`), or the name of the file schedule_csv came from."""
    schedule_csv: str | None = None
    """A schedule read from a file (`pipesim run --schedule-file`): its one step as a compute-only PyTorch
    CSV, repeated for every step (schedules.imported); None runs the generator `schedule` names."""
    stages: int = 2
    """Pipeline ranks P (processes; one device each)."""
    microbatches: int = 4
    """Microbatches per optimizer step (m)."""
    steps: int = 20
    """Optimizer steps (minibatches) to run."""
    chunks: int = 1
    """Model chunks per rank (interleaved only)."""
    model: str = "tiny"
    """Model preset name (executor.training.model.PRESETS)."""
    layers: int | None = None
    """Override of the preset's transformer blocks, a count; None keeps the preset's."""
    hidden: int | None = None
    """Override of the preset's width, in features; None keeps the preset's."""
    seq_len: int | None = None
    """Override of the preset's context length, in tokens; None keeps the preset's."""
    split: tuple[int, ...] | None = None
    """Blocks per model piece (P * chunks numbers); None: balanced."""
    microbatch_size: int = 8
    """Sequences per microbatch."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimizer, learning-rate schedule and staleness correction of every stage."""
    data: str | None = None
    """Text file or folder to train on; None: the Python standard library's source files."""
    seed: int = 0
    """Seed of the weights and of the batches."""
    device: str = "cpu"
    """'cpu' (gloo) or 'cuda' (NCCL, one GPU per rank)."""
    threads: int = 1
    """Torch threads per rank (intra-op); the same count gives bit-identical runs."""
    pin: bool = True
    """CPU runs under torchrun: each rank's threads run on `threads` CPUs of their own (the first ones
    of those pipesim may use for local rank 0, the next for rank 1, ...), when this machine has enough
    for all its ranks: a rank is then a device of its own, as the simulator models it
    (executor.run.cpus). False (`--no-pin`): the OS places the threads."""
    val_every: int = 10
    """Measure the validation loss every this many steps (and after the last); 0: never."""
    val_microbatches: int = 2
    """Validation microbatches per measurement (fixed batches, the same every time)."""
    timeout: float = 60.0
    """Seconds one action may take before its rank stops as stalled and the whole run with it (a rank
    waiting for a peer waits 2 s longer: the rank that stalled is the one named)."""
    checkpoint_every: int = 0
    """Save a checkpoint every this many steps; 0: never."""
    keep_checkpoints: int = 3
    """Keep this many of the newest complete checkpoints; older ones are deleted as new ones are written."""
    single_process: bool = False
    """Run every rank in this one process (round robin, local hand-offs) instead of torchrun."""
    trace: bool = True
    """Record every action's start, end, bytes and memory (trace.json). False (`--no-trace`) records
    only losses, validation and step boundaries: a measurement aid, to see what recording costs; the
    run's trace.json then holds no events (nothing to calibrate or compare)."""
    out: str = "runs/run"
    """The run folder (config.json, trace.json, metrics.jsonl, checkpoints/)."""
    resume: str | None = None
    """A run folder to continue from its latest complete checkpoint."""

    @property
    def model_config(self) -> GPTConfig:
        overrides = {
            name: value
            for name, value in (("layers", self.layers), ("hidden", self.hidden), ("seq_len", self.seq_len))
            if value is not None
        }
        return model_config(self.model, **overrides)

    @property
    def pieces(self) -> int:
        """Model pieces the layers are cut into: P, or P * chunks for interleaved."""
        return self.stages * self.chunks

    def val_steps(self) -> frozenset[int]:
        return validation_steps(self.steps, self.val_every)

    def checkpoint_steps(self) -> frozenset[int]:
        return checkpoint_steps(self.steps, self.checkpoint_every)

    def build_schedule(self) -> Schedule:
        if self.schedule_csv is not None:
            return schedule_from_text(
                self.schedule_csv, name=self.schedule, steps=self.steps, chunks=self.chunks
            )
        return build(self.schedule, self.stages, self.microbatches, self.steps, self.chunks)

    def build_plans(self, schedule: Schedule | None = None) -> list[RankPlan]:
        """Every rank's program: the schedule's actions plus this run's validation, checkpoint and
        gradient-norm ops (executor.interpreter.program.RankPlan)."""
        return build_plans(
            schedule if schedule is not None else self.build_schedule(),
            val_steps=self.val_steps(),
            val_microbatches=self.val_microbatches,
            checkpoint_steps=self.checkpoint_steps(),
            grad_clip=self.optimizer.grad_clip,
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["split"] = list(self.split) if self.split is not None else None
        data["optimizer"]["betas"] = list(self.optimizer.betas) if self.optimizer.betas else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        optimizer = dict(data.pop("optimizer", {}))
        if optimizer.get("betas") is not None:
            optimizer["betas"] = tuple(optimizer["betas"])
        if data.get("split") is not None:
            data["split"] = tuple(data["split"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExecutorConfigError(f"config: unknown field {unknown[0]!r}")
        return cls(optimizer=OptimizerConfig(**optimizer), **data)

    def identity(self) -> dict[str, Any]:
        """What must match for a run folder to be resumed with this config."""
        data = self.to_dict()
        for name in RUN_ONLY_FIELDS:
            data.pop(name)
        return data


def validate(config: RunConfig, *, here: bool = True) -> Schedule:
    """Check everything a user can get wrong; returns the lowered schedule. One line per problem.
    `here`: the run starts on this machine (else its devices are not checked: --prepare)."""
    return validate_run(config, here=here)[0]


def validate_run(config: RunConfig, *, here: bool = True):
    """`validate`, returning the loaded corpus too: (schedule, executor.training.data.Corpus)."""
    _check_counts(config)
    try:
        if config.schedule_csv is None:
            info = get_info(config.schedule)
            check_request(info, config.stages, config.microbatches, config.steps, config.chunks)
        else:
            _check_file_sizes(config, config.build_schedule())
    except ScheduleError as error:
        raise ExecutorConfigError(str(error)) from None
    _check_pieces(config)
    if config.device not in DEVICES:
        raise ExecutorConfigError(f"--device must be one of {', '.join(DEVICES)}, got {config.device!r}")
    if config.device == "cuda" and here:
        _check_cuda(config)
    corpus = load_corpus(config.data)
    corpus.check(config.model_config.seq_len)
    if config.resume is not None:
        check_resume(config, corpus.digest)
    schedule = config.build_schedule()
    _check_programs(config, schedule)
    return schedule, corpus


def _check_file_sizes(config: RunConfig, schedule: Schedule) -> None:
    """A file's P, m and chunks are the run's (pipesim run sets them from the file)."""
    for flag, given, found in (
        ("--stages", config.stages, schedule.ranks),
        ("--microbatches", config.microbatches, schedule.microbatches),
        ("--chunks", config.chunks, schedule.chunks),
    ):
        if given != found:
            raise ScheduleError(
                f"{config.schedule}: {flag} {given}, but the file has {found} (leave {flag} out)"
            )


def _check_programs(config: RunConfig, schedule: Schedule) -> None:
    """The programs with validation and checkpoints placed must still run to the end (no deadlock)."""
    try:
        plans = config.build_plans(schedule)
    except ValueError as error:
        raise ExecutorConfigError(f"--schedule {config.schedule}: {error}") from None
    stuck = stuck_ranks(plans, schedule.layout)
    if stuck:
        where = ", ".join(f"rank {rank} at {op}" for rank, op in stuck)
        raise ExecutorConfigError(f"--schedule {config.schedule} with --val-every cannot run: {where}")


def _check_counts(config: RunConfig) -> None:
    for flag, value, low in (
        ("--microbatch-size", config.microbatch_size, 1),
        ("--threads", config.threads, 1),
        ("--val-microbatches", config.val_microbatches, 1),
        ("--val-every", config.val_every, 0),
        ("--checkpoint-every", config.checkpoint_every, 0),
        ("--keep-checkpoints", config.keep_checkpoints, 1),
    ):
        if value < low:
            raise ExecutorConfigError(f"{flag} must be at least {low}, got {value}")
    if not (math.isfinite(config.timeout) and config.timeout > 0):
        raise ExecutorConfigError(f"--timeout must be a positive number of seconds, got {config.timeout}")


def _check_pieces(config: RunConfig) -> None:
    """The model must have a block for every piece; with chunks, say that pieces are stages x chunks."""
    layers = config.model_config.layers
    if config.chunks > 1 and config.pieces > layers:
        raise ExecutorConfigError(
            f"--stages {config.stages} x --chunks {config.chunks} = {config.pieces} model pieces, more "
            f"than the model's {layers} layers (fewer --stages or --chunks, or more --layers)"
        )
    split_layers(layers, config.pieces, config.split)


def _check_cuda(config: RunConfig) -> None:
    if not torch.cuda.is_available():
        raise ExecutorConfigError("--device cuda: no CUDA device is visible (use --device cpu)")
    if torch.cuda.device_count() < config.stages and not config.single_process:
        raise ExecutorConfigError(
            f"--stages {config.stages} needs {config.stages} GPUs, {torch.cuda.device_count()} visible"
        )


def read_folder_config(folder: str | Path, flag: str) -> tuple[RunConfig, dict[str, Any]]:
    """A run folder's config.json, the one place it is parsed: (its RunConfig, the whole record with the
    data's digest). A missing or foreign file is one line naming `flag` and the folder."""
    path = Path(folder) / "config.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        return RunConfig.from_dict(recorded["config"]), recorded
    except OSError:
        raise ExecutorConfigError(f"{flag} {folder}: no readable run config.json there") from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ExecutorConfigError(f"{flag} {folder}: config.json is not a run config ({error})") from None


def check_resume(config: RunConfig, data_digest: str | None = None) -> None:
    """The resume folder must hold a config.json of the same run, trained on the same data (when
    `data_digest` is given). The folder's state (lock, checkpoints, progress) is executor.run.launch's."""
    folder = Path(config.resume)
    saved, recorded = read_folder_config(folder, "--resume")
    ours, theirs = _flat(config.identity()), _flat(saved.identity())
    for name in [*ours, *(name for name in theirs if name not in ours)]:
        if ours.get(name) != theirs.get(name):
            raise ExecutorConfigError(
                f"--resume {folder} was run with {name}={theirs.get(name)!r}, this run has {ours.get(name)!r}"
            )
    before = (recorded.get("data") or {}).get("digest")
    if data_digest is not None and before is not None and before != data_digest:
        raise ExecutorConfigError(
            f"--resume {folder}: the training data changed since the run started (sha256 {before[:12]}... "
            f"then, {data_digest[:12]}... now); resume on the same data or start a new run"
        )


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 1}} -> {"optimizer.lr": 1}: a mismatch names the one field that differs."""
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat

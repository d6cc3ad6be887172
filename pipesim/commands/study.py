"""`pipesim study`: does asynchrony pay? Convergence per schedule and optimizer, and time to a target loss.

    pipesim study --preset quick --out study/quick            # a few minutes on two cores
    pipesim study --preset paper --out study/paper --jobs 2   # the documented grid (docs/study/)
    pipesim study --preset quick --out study/quick            # again: nothing is recomputed

Three phases, each resumable (a run whose file exists is never run again; Ctrl-C loses only the runs
in flight): the lr sweep on the synchronous reference, the grid (schedules x optimizer variants x
depths x seeds, executor single-process mode, a process pool) with one short timing run per schedule
on this CPU, then the tables and plots. The logic lives in executor/study/ (grid, training, folder,
analysis, figures) and pipesim/commands/study_tasks.py (the parts that need the simulator too);
docs/study/README.md describes the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from pipesim.commands.run import FLAG_SWITCHES, FLAGS
from pipesim.errors import UsageError

if TYPE_CHECKING:  # the grid imports torch, which `pipesim schedules` must not pay for
    from executor.study.grid import StudyConfig

PER_CELL = {"--optimizer", "--lr", "--correction", "--warmup-steps", "--total-steps", "--pipemare-steps"}
"""Optimizer flags of `pipesim run` that the study sets per cell (or in steps, as its own flags)."""
STUDY_OPTIMIZER_FLAGS = [f for f in FLAGS if f[1].startswith("optimizer.") and f[0] not in PER_CELL]
"""`pipesim run`'s optimizer flags that every cell shares (betas, eps, momentum, ...)."""


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("empty list")
    return names


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _lr_map(text: str, many: bool) -> dict[str, Any]:
    """'adamw=3e-3,muon=1e-2' (or, many, 'adamw=1e-3/3e-3,...') -> {name: lr or (lrs)}."""
    found: dict[str, Any] = {}
    for part in _names(text):
        name, _, values = part.partition("=")
        try:
            lrs = tuple(float(value) for value in values.split("/"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=LR, got {part!r}") from None
        if not name or (len(lrs) > 1 and not many):
            raise argparse.ArgumentTypeError(f"expected NAME=LR, got {part!r}")
        found[name.strip()] = lrs if many else lrs[0]
    return found


# (flag, StudyConfig field, type, help)
GRID_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--schedules", "schedules", _names, "comma list; the first is the synchronous reference"),
    ("--optimizers", "variants", _names, "optimizer variants, e.g. adamw,muon,adamw+pipemare,muon+delay"),
    ("--stages", "depths", _ints, "comma list of depths P"),
    ("--seeds", "seeds", _ints, "comma list of seeds"),
    ("--steps", "steps", int, "steps of m microbatches per run (equal tokens for every schedule)"),
    ("--microbatches", "microbatches", int, "microbatches per step m"),
    ("--microbatch-size", "microbatch_size", int, "sequences per microbatch"),
    ("--model", "model", str, "executor model preset"),
    ("--layers", "layers", int, "transformer blocks (at least the largest P)"),
    ("--hidden", "hidden", int, "width"),
    ("--seq-len", "seq_len", int, "context length"),
    ("--data", "data", str, "text file or folder (default: the Python standard library's sources)"),
    ("--val-every", "val_every", int, "validation every N steps"),
    ("--val-microbatches", "val_microbatches", int, "validation microbatches per measurement"),
    ("--warmup-steps", "warmup_steps", int, "linear lr warm-up, in steps (x m updates for pipedream)"),
    ("--pipemare-steps", "pipemare_steps", int, "PipeMare's T_c, in steps (x m updates for pipedream)"),
    ("--lr", "lrs", lambda t: _lr_map(t, False), "fixed lr per optimizer, e.g. adamw=3e-3 (no sweep)"),
    ("--lr-grid", "lr_grid", lambda t: _lr_map(t, True), "lr sweep, e.g. adamw=1e-3/3e-3,muon=1e-2/3e-2"),
    ("--sweep-extend", "sweep_extend", int, "times the lr sweep may look one step past an edge best"),
    ("--lr-rules", "lr_rules", _names, "pipedream's lr rules: per-update, per-token"),
    ("--probe-scale", "probe_scale", float, "lr probe: also run probe optimizers at lr x this"),
    ("--probe-optimizers", "probe_variants", _names, "variants of the lr probe (among --optimizers)"),
    ("--probe-schedules", "probe_schedules", _names, "schedules of the lr probe (among --schedules)"),
    ("--target", "target", float, "target validation loss (default: the reference's at --target-fraction)"),
    ("--target-fraction", "target_fraction", float, "where in the budget the reference sets the target"),
    ("--timing-steps", "timing_steps", int, "steps of each CPU timing run; 0: no CPU timing"),
]
ALIASES = {"--stages": ("-p",), "--microbatches": ("-m",)}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="train every schedule x optimizer x depth x seed; gaps to 1F1B and time to a target loss",
        description="Staleness study: convergence per schedule and optimizer, and time to a target loss.",
    )
    parser.add_argument("--preset", default="quick", help="quick or paper (default quick)")
    parser.add_argument("--out", required=True, help="study folder (resumed if it exists)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    for flag, field, kind, text in GRID_FLAGS + STUDY_OPTIMIZER_FLAGS:
        names = (*ALIASES.get(flag, ()), flag)
        parser.add_argument(
            *names, dest=field, type=kind, default=None, metavar=field.split(".")[-1].upper(), help=text
        )
    parser.add_argument(
        "--nesterov-per-stage",
        dest="optimizer.nesterov_per_stage",
        action="store_true",
        default=None,
        help="nadamw: beta1 per stage (as pipesim run)",
    )
    parser.add_argument(
        "--no-decay", dest="decay", action="store_false", default=None, help="no cosine decay"
    )
    parser.add_argument("--predict-model", default="gpt3-1.3b", help="model preset of the predicted times")
    parser.add_argument("--predict-device", default="h100-sxm", help="device preset of the predicted times")
    parser.add_argument("--predict-devices", type=int, default=8, help="devices: P stages x devices/P copies")
    parser.add_argument("--no-png", action="store_true", help="HTML plots only (no kaleido)")
    parser.add_argument("--plotly-js", default="directory", help="directory (offline) or cdn")
    parser.set_defaults(func=run)


def make_study(args: argparse.Namespace) -> StudyConfig:
    """The preset with the flags the user gave."""
    from executor.study.presets import preset

    base = preset(args.preset)
    fields = [field for _, field, _, _ in GRID_FLAGS + STUDY_OPTIMIZER_FLAGS] + ["decay", *FLAG_SWITCHES]
    given = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    optimizer = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("optimizer.")}
    plain = {k: v for k, v in given.items() if not k.startswith("optimizer.")}
    return dataclasses.replace(base, optimizer=dataclasses.replace(base.optimizer, **optimizer), **plain)


def run(args: argparse.Namespace) -> int:
    from executor.run.runfolder import FolderLock
    from executor.study.store import StudyFolder

    study = make_study(args)
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    check(study, args)
    folder = StudyFolder(args.out)
    try:
        folder.path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {folder.path}: cannot make the folder ({error.strerror})") from None
    with FolderLock(folder, "pipesim study"):  # a second study in the same folder is refused
        return _run_locked(study, folder, args, jobs)


def _run_locked(study: StudyConfig, folder, args: argparse.Namespace, jobs: int) -> int:
    folder.remove_leftovers()
    folder.claim({"study": study.to_dict(), "preset": args.preset})
    try:
        lrs = sweep_phase(study, folder, jobs)
        ran = grid_phase(study, folder, lrs, jobs)
    except KeyboardInterrupt:
        print(
            f"pipesim study: stopped; the finished runs are kept in {folder.path}; "
            "the same command continues from there",
            file=sys.stderr,
        )
        raise
    from pipesim.commands.study_report import report

    report(study, folder, lrs, args, ran)
    return 0


def check(study: StudyConfig, args: argparse.Namespace) -> None:
    """Everything a user can get wrong, before any run starts (one line, exit 2)."""
    from executor.run.runconfig import validate
    from executor.study.grid import Cell, run_config

    _check_names(study)
    _check_counts(study)
    _check_predict(args, study.depths)
    for schedule in study.schedules:
        for stages in study.depths:
            cell = Cell(schedule=schedule, variant=study.variants[0], stages=stages, seed=study.seeds[0])
            validate(run_config(study, cell, 1e-3))


def _check_names(study: StudyConfig) -> None:
    from executor.study.grid import LR_RULES, Variant, base_optimizers
    from executor.training.optim import OPTIMIZERS
    from schedules import get_info

    for variant in (*study.variants, *study.probe_variants):
        Variant.parse(variant)
    if get_info(study.reference).asynchronous:
        raise UsageError(
            f"--schedules: the first, {study.reference}, is the reference and must be synchronous"
        )
    unknown = [r for r in study.lr_rules if r not in LR_RULES]
    if unknown:
        raise UsageError(f"--lr-rules: unknown {unknown[0]!r}; choose from {', '.join(LR_RULES)}")
    for name, lrs in [*((n, (lr,)) for n, lr in study.lrs.items()), *study.lr_grid.items()]:
        if name not in OPTIMIZERS or not all(lr > 0 for lr in lrs):
            shown = "/".join(f"{lr:g}" for lr in lrs)
            raise UsageError(f"--lr or --lr-grid: {name}={shown}: not an optimizer, or an lr <= 0")
    for name in base_optimizers(study):
        if name not in study.lrs and not study.lr_grid.get(name):
            raise UsageError(f"--lr or --lr-grid: no learning rate for {name}")


def _check_counts(study: StudyConfig) -> None:
    for name, field, low in (
        ("--steps", "steps", 1),
        ("--val-every", "val_every", 1),
        ("--timing-steps", "timing_steps", 0),
        ("--sweep-extend", "sweep_extend", 0),
    ):
        if getattr(study, field) < low:
            raise UsageError(f"{name} must be at least {low}, got {getattr(study, field)}")
    if study.probe_scale is not None and not study.probe_scale > 0:
        raise UsageError(f"--probe-scale must be positive, got {study.probe_scale}")
    if not 0 < study.target_fraction <= 1:
        raise UsageError(f"--target-fraction must be in (0, 1], got {study.target_fraction}")


def _check_predict(args: argparse.Namespace, depths: tuple[int, ...]) -> None:
    from simulator.request import CostRequest

    for stages in depths:
        if args.predict_devices % stages:
            raise UsageError(f"--predict-devices {args.predict_devices} is not a multiple of P = {stages}")
    CostRequest(model=args.predict_model, device=args.predict_device)
    if args.plotly_js not in ("directory", "cdn"):
        raise UsageError(f"--plotly-js: directory or cdn, got {args.plotly_js!r}")


def plain(config) -> dict[str, Any]:
    """A RunConfig as its JSON round trip (what a run file's header holds)."""
    return json.loads(json.dumps(config.to_dict()))


def header(study: StudyConfig, cell, config) -> dict[str, Any]:
    from executor.study.grid import updates_per_step

    return {
        "name": cell.name,
        "cell": dataclasses.asdict(cell),
        "config": plain(config),
        "updates_per_step": updates_per_step(cell.schedule, cell.stages, study.microbatches),
        "tokens_per_step": study.microbatches * config.microbatch_size * config.model_config.seq_len,
    }


def run_pool(tasks: list, jobs: int, label: str) -> None:
    from executor.study.pool import ProgressBar, run_tasks
    from pipesim.commands.study_tasks import work

    if tasks:
        run_tasks(tasks, work, jobs=jobs, done=ProgressBar(len(tasks), label=label))


def sweep_phase(study: StudyConfig, folder, jobs: int) -> dict[str, float]:
    """Run the lr sweep (extended past an edge optimum, executor.study.sweep); each optimizer's lr."""
    from executor.study.store import write_json
    from executor.study.sweep import best, extension, initial_grid

    grid, extended = initial_grid(study), []
    for round_ in range(study.sweep_extend + 1):
        results = sweep_round(study, folder, grid, jobs)
        more = {name: extension(found) for name, found in results.items()}
        more = {name: lr for name, lr in more.items() if lr is not None}
        if not more or round_ == study.sweep_extend:
            break
        for name, lr in more.items():
            grid[name].append(lr)
            extended.append(f"{name}={lr:g}")
    chosen = {**study.lrs, **{name: best(found) for name, found in results.items()}}
    tried = {name: {f"{lr:g}": loss for lr, loss in sorted(found.items())} for name, found in results.items()}
    write_json(folder.lrs, {"chosen": chosen, "tried": tried, "extended": extended, "given": dict(study.lrs)})
    return chosen


def sweep_round(study: StudyConfig, folder, grid: dict[str, list[float]], jobs: int) -> dict:
    """Run the sweep's missing runs; {optimizer: {lr: final validation loss}}."""
    from executor.study.grid import run_config
    from executor.study.sweep import sweep_cell
    from pipesim.commands.study_tasks import TrainTask

    tasks = []
    for name, lrs in grid.items():
        cell = sweep_cell(study, name)
        for lr in lrs:
            config, path = run_config(study, cell, lr), folder.sweep_path(cell.name, lr)
            if not folder.finished(path, plain(config)):
                tasks.append(TrainTask(path=str(path), header=header(study, cell, config), config=config))
    run_pool(tasks, jobs, "lr sweep")
    return {
        name: {lr: folder.read_run(folder.sweep_path(sweep_cell(study, name).name, lr)).end["final_val_loss"]
               for lr in lrs}
        for name, lrs in grid.items()
    }  # fmt: skip


def grid_phase(study: StudyConfig, folder, lrs: dict[str, float], jobs: int) -> int:
    """Run the grid's missing runs and timings; returns how many tasks ran."""
    from executor.study.grid import run_config, runs
    from pipesim.commands.study_tasks import TrainTask

    tasks: list = []
    for cell in sorted(runs(study), key=lambda c: -c.stages):  # the longest first: a shorter tail
        config, path = run_config(study, cell, lrs[cell.optimizer]), folder.run_path(cell.name)
        if folder.finished(path, plain(config)) or _reuse_sweep(study, folder, cell, config, lrs):
            continue
        tasks.append(TrainTask(path=str(path), header=header(study, cell, config), config=config))
    tasks += timing_tasks(study, folder, lrs)
    run_pool(tasks, jobs, "study")
    return len(tasks)


def _reuse_sweep(study: StudyConfig, folder, cell, config, lrs: dict[str, float]) -> bool:
    """The sweep already ran the reference at the smallest depth and first seed with the chosen lr."""
    from schedules.fileio import write_atomic

    source = folder.sweep_path(cell.name, lrs[cell.optimizer])
    if cell.optimizer in study.lrs or not source.exists():
        return False
    if folder.read_run(source).header.get("config") != plain(config):
        return False
    write_atomic(folder.run_path(cell.name), source.read_text(encoding="utf-8"))
    return True


def timing_tasks(study: StudyConfig, folder, lrs: dict[str, float]) -> list:
    """One CPU timing per (schedule, variant, P) whose file is missing or was made with other settings."""
    from executor.study.grid import cells, run_config
    from executor.study.store import read_json
    from pipesim.commands.study_tasks import TimingTask, timing_name

    if study.timing_steps == 0:
        return []
    tasks, seen = [], set()
    for cell in cells(study):
        name = timing_name(cell)
        if name in seen:
            continue
        seen.add(name)
        config = run_config(study, cell, lrs[cell.optimizer])
        config = dataclasses.replace(config, steps=study.timing_steps, val_every=0)
        path = folder.timing_path(name)
        if not path.exists() or read_json(path).get("config") != plain(config):
            tasks.append(TimingTask(path=str(path), config=config))
    return tasks

"""The study's work items (run in pool workers) and its step times: at scale (simulator) and on this CPU.

    work(TrainTask(...))      # train one cell (executor.study.train), write its JSONL atomically
    work(TimingTask(...))     # time a schedule on this CPU, write timing/NAME.json atomically
    predicted_step_times(study, model="gpt3-1.3b", device="h100-sxm", devices=8)

Step time at scale: the simulator's steady step time (median step of 4) for the schedule at depth P with
the study's m, on the analytic costs of a model preset on a device preset. `devices` GPUs hold
devices / P data-parallel copies of the P-stage pipeline (the simulator's ring all-reduce at every
update), so every depth uses the same machine; each step's iterations are the study's.

Step time on this CPU (measured, then simulated): a short single-process run of the cell with
`pipesim run`'s machinery (executor.run.launch), its trace fitted by `pipesim calibrate`'s code
(simulator.calibration); the simulator then runs the same schedule with those costs, as if every rank
had a core of this CPU to itself. One change to the fit: in single-process mode a rank's gap before a
receive is the time the other ranks ran (round robin), not host time, so host_recv is set to host_send
(posting a message in this process) and the link to 0 s (hand-offs are in memory). The serial time per
step (all ranks on one core, what the study's runs cost) is kept beside it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.run.launch import launch
from executor.run.runconfig import RunConfig
from executor.study.grid import Cell, StudyConfig, Variant, cells
from executor.study.store import StudyFolder, write_json
from executor.study.train import train
from schedules import build
from simulator.calibration import calibrated_costs
from simulator.costs import OPTIMIZER_STATE
from simulator.request import CostRequest
from simulator.simulation import simulate
from traces.calibrate import calibrate
from traces.io import read_trace
from traces.metrics import compute_metrics

PREDICT_STEPS = 4
"""Steps each at-scale simulation covers (the step time is the median after the first)."""


@dataclass(frozen=True, kw_only=True)
class TrainTask:
    """Train one cell (or one lr-sweep run) and write its file."""

    path: str
    """Where its JSONL goes."""
    header: dict[str, Any]
    """The file's "run" line."""
    config: RunConfig
    """What to run (single process)."""


@dataclass(frozen=True, kw_only=True)
class TimingTask:
    """Time one schedule with one optimizer variant at one depth on this CPU."""

    path: str
    """Where its JSON goes."""
    config: RunConfig
    """The cell's config; run for its `steps` (the study's timing_steps), without validation."""


def timing_name(cell: Cell) -> str:
    """One CPU timing per schedule, variant and depth (the lr and seed do not change the cost)."""
    return f"{cell.schedule}-{cell.variant}-p{cell.stages}"


def work(task: TrainTask | TimingTask) -> str:
    """Run a task in this process and write its file atomically; returns the file's path."""
    if isinstance(task, TrainTask):
        StudyFolder.write_run(Path(task.path), task.header, train(task.config))
    else:
        config = json.loads(json.dumps(task.config.to_dict()))
        write_json(Path(task.path), {"config": config, **cpu_step_time(task.config)})
    return task.path


def cpu_step_time(config: RunConfig) -> dict[str, Any]:
    """Measure a short single-process run, fit its costs, and simulate it one core per rank."""
    with tempfile.TemporaryDirectory(prefix="pipesim-study-") as folder:
        run = dataclasses.replace(config, out=str(Path(folder) / "run"), val_every=0, checkpoint_every=0)
        if launch(run, err=io.StringIO(), out=io.StringIO()) != 0:
            raise RuntimeError(f"the timing run of {config.schedule} P={config.stages} failed")
        trace = read_trace(Path(folder) / "run" / "trace.json")
    costs = in_process(calibrated_costs(calibrate(trace), trace))
    schedule = build(config.schedule, config.stages, config.microbatches, steps=config.steps)
    predicted = simulate(schedule, costs).metrics()
    return {
        "step_time_s": predicted.step_time,
        "serial_step_time_s": compute_metrics(trace).step_time,
        "steps": config.steps,
        "optimizer": config.optimizer.name,
        "correction": config.optimizer.correction,
        "forward_s": [stage.forward for stage in costs.stages],
        "backward_s": [stage.backward for stage in costs.stages],
        "optimizer_step_s": [stage.optimizer_step for stage in costs.stages],
    }


def in_process(costs):
    """The fit of a single-process trace, made a one-core-per-rank machine (see the module docstring)."""
    stages = tuple(dataclasses.replace(stage, host_recv=stage.host_send) for stage in costs.stages)
    return dataclasses.replace(costs, stages=stages, latency=0.0, link_jitter=())


def simulator_optimizer(variant: str) -> str:
    """The optimizer whose state and step the simulator costs (corrections' extra copies are not)."""
    name = Variant.parse(variant).optimizer
    return name if name in OPTIMIZER_STATE else "adamw"


def predicted_step_times(
    study: StudyConfig, *, model: str, device: str, devices: int
) -> dict[tuple[str, int, str], float]:
    """(schedule, P, variant) -> the step time predicted at scale, in seconds."""
    times: dict[tuple[str, int, str], float] = {}
    by_optimizer: dict[tuple[str, int, str], float] = {}
    for cell in cells(study):
        key = (cell.schedule, cell.stages, simulator_optimizer(cell.variant))
        if key not in by_optimizer:
            request = CostRequest(
                model=model,
                device=device,
                optimizer=key[2],
                overrides={"data_parallel": devices // cell.stages},
            )
            schedule = build(cell.schedule, cell.stages, study.microbatches, steps=PREDICT_STEPS)
            by_optimizer[key] = simulate(schedule, request.costs_for(schedule)).metrics().step_time
        times[(cell.schedule, cell.stages, cell.variant)] = by_optimizer[key]
    return times

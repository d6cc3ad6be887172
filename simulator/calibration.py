"""Turn a fit of a measured trace (traces/calibrate.py) into a cost model and a commented cost file.

    from simulator.calibration import calibrate_trace, repredict
    fit, text = calibrate_trace(trace, source="runs/a")   # traces.calibrate's fit and the cost file
    Path("costs.toml").write_text(text)
    predicted = repredict(trace, loads_costs(text, source="costs.toml"))   # the same run, simulated

Times come from the fit. Sizes come from the trace too: message bytes from its sends, and the memory
model's weight and stash bytes per stage by least squares, so that the simulator's memory per rank after
every action (simulator/memory.py) best matches the `memory` the run recorded:

    memory[rank][i] = known(i) + sum over stages e of  weights_e x W[rank][i][e] + stash_e x S[rank][i][e]

where W and S come from running the memory model with one byte of that size and nothing else (it is
linear in them). Optimizer state follows the run's optimizer (AdamW: two copies of the weights).

The file is an ordinary cost file (docs/cost-model.md) that `pipesim simulate --costs` reads; its
comments say where every number came from: the steps used, how many values were kept and dropped, their
spread, and how the link was fitted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from schedules.costs import DEFAULT_OVERLAP_F_B
from schedules.ir import Kind, Schedule
from simulator.analytic import stage_work
from simulator.costfile import dumps_costs
from simulator.costs import EMPIRICAL, OPTIMIZER_STATE, CostModel, StageCost
from simulator.engine import run_plan
from simulator.memory import memory_over_time, memory_plan
from simulator.plan import make_plan
from simulator.presets import MODELS
from simulator.presets import device as device_preset
from simulator.presets import model as model_preset
from simulator.simulation import simulate
from traces.calibrate import Calibration, Estimate, calibrate
from traces.schema import Trace, schedule_of

TIME_FIELDS = (
    "forward",
    "backward",
    "backward_weight",
    "optimizer_step",
    "host_forward",
    "host_backward",
    "host_optimizer_step",
    "host_send",
    "host_recv",
    "warmup_forward",
    "warmup_backward",
    "warmup_optimizer_step",
    "latency",
)
"""Cost-file keys a calibration fits as times, written with a unit."""

SIZE_UNIT = 1 << 20
"""The size each memory-model column is computed with (large enough that chunk divisions stay exact)."""


def calibrate_trace(measured: Trace, *, source: str) -> tuple[Calibration, str]:
    """The fit of a trace and the text of its cost file (`source` names the trace in the comments)."""
    fit = calibrate(measured)
    return fit, calibration_toml(fit, calibrated_costs(fit, measured), source=source)


def repredict(measured: Trace, costs: CostModel, *, label: str = "calibrated") -> Trace:
    """The simulator's trace of the schedule a trace ran, under `costs` (its calibrated prediction)."""
    return simulate(schedule_of(measured.schedule), costs, meta={"costs": label}).trace()


def calibrated_costs(fit: Calibration, trace: Trace) -> CostModel:
    """The cost model the fit describes: fitted times per stage, the fitted link, sends overlapping
    compute (a real runtime's transfers do), message sizes, memory sizes and the workload from the trace."""
    stages = tuple(_stage_cost(fit, entry, trace) for entry in range(fit.entries))
    latency = fit.link.latency.seconds if fit.link.latency is not None else 0.0
    workload = fit.workload
    factors = _spread(fit.compute_factors)
    costs = CostModel(
        stages=stages,
        latency=latency,
        bandwidth=fit.link.bandwidth,
        overlap=True,
        link_jitter=_spread(fit.link.factors),
        jitter=EMPIRICAL if factors else "none",
        jitter_factors=factors,
        optimizer=_optimizer(trace),
        microbatch_size=int(workload.get("microbatch_size") or 1),
        sequence_length=int(workload.get("sequence_length") or 1),
        data_parallel=int(workload.get("data_parallel") or 1),
        overlap_f_b=_overlap_f_b(trace),
        source={"calibrated": True},
    )
    return fit_memory(costs, fit, trace)


def _overlap_f_b(trace: Trace) -> float:
    """How an OVERLAP_F_B pair's halves ran: one after the other in a measured run (the executor does
    not overlap them: 1), as the simulation said in a simulated one."""
    if not any(event.action.kind is Kind.OVERLAP_F_B for event in trace.events):
        return DEFAULT_OVERLAP_F_B
    if trace.source == "measured":
        return 1.0
    return float(trace.meta.get("cost_model", {}).get("overlap_f_b", DEFAULT_OVERLAP_F_B))


def _spread(factors: tuple[float, ...]) -> tuple[float, ...]:
    """The factors rounded for the file, or () where they say there is no spread at all."""
    rounded = tuple(round(factor, 4) for factor in factors)
    return () if all(factor == 1.0 for factor in rounded) else rounded


def _stage_cost(fit: Calibration, entry: int, trace: Trace) -> StageCost:
    times = {name: estimate.seconds for name, estimate in fit.stages[entry].times.items()}
    backward = times.get("backward", 0.0)
    weight = times.get("backward_weight")
    return StageCost(
        forward=times.get("forward", 0.0),
        backward=backward,
        backward_weight=None if weight is None else min(weight, backward),
        optimizer_step=times.get("optimizer_step", 0.0),
        activation_bytes=_message_bytes(fit, entry, trace),
        **{name: value for name, value in times.items() if name.startswith(("host_", "warmup_"))},
    )


def _message_bytes(fit: Calibration, entry: int, trace: Trace) -> int:
    """Bytes of the activations a stage of this entry sends on (the largest seen)."""
    layout, chunks = fit.schedule.layout, fit.schedule.chunks
    sizes = [
        event.bytes
        for event in trace.events
        if event.action.kind in (Kind.SEND_F, Kind.SEND_B)
        and layout.depth(event.action.stage) // chunks == entry
    ]
    return max(sizes, default=0)


def _optimizer(trace: Trace) -> str:
    """The optimizer a measured run used (its config in the trace's meta), if pipesim knows its state."""
    config = trace.meta.get("config") or {}
    name = (config.get("optimizer") or {}).get("name", "adamw")
    return name if name in OPTIMIZER_STATE else "adamw"


# --- the device's speed --------------------------------------------------------------------------


GPU_PRESETS = (("H100", "h100-sxm"), ("H200", "h100-sxm"), ("A100", "a100-80gb"))
"""A GPU's name (torch.cuda.get_device_name, in a measured trace's meta) -> the device preset it
computes like (an H200 has an H100's arithmetic and faster memory)."""


def device_of(trace: Trace) -> str | None:
    """The device preset a measured run ran on: `cpu`, or the preset of its GPU; None when unknown."""
    if trace.meta.get("device") == "cpu":
        return "cpu"
    gpu = str(trace.meta.get("gpu", ""))
    return next((preset for name, preset in GPU_PRESETS if name in gpu), None)


def achieved_flops(fit: Calibration, trace: Trace, device: str | None = None) -> dict[str, Any] | None:
    """FLOP/s the run's forwards and backwards reached, by the analytic model's FLOP counts of the model
    the executor ran (its config in the trace's meta), and the `efficiency` the device preset (`device`,
    else the run's own: device_of) would need to predict them (how to refit the `cpu` preset from a
    calibration; no efficiency where the preset is unknown); None without a config."""
    config = trace.meta.get("config")
    if not isinstance(config, dict) or config.get("model") not in MODELS:
        return None
    spec = model_preset(
        config["model"],
        layers=config.get("layers"),
        hidden=config.get("hidden"),
        seq_len=config.get("seq_len"),
        microbatch_size=config.get("microbatch_size"),
        split=tuple(config["split"]) if config.get("split") else None,
    )
    work = stage_work(spec, fit.entries)
    flops = seconds = 0.0
    for stage, stage_fit in zip(work, fit.stages, strict=True):
        times = stage_fit.times
        if "forward" in times and "backward" in times:
            flops += stage.forward_flops + stage.input_grad_flops + stage.weight_grad_flops
            seconds += times["forward"].seconds + times["backward"].seconds
    if seconds <= 0:
        return None
    speed: dict[str, Any] = {"flops_per_s": flops / seconds}
    preset = device or device_of(trace)
    if preset is not None:
        peak = device_preset(preset).peak_at(spec.dtype)
        speed.update(device=preset, dtype=spec.dtype, peak_flops=peak, efficiency=flops / seconds / peak)
    return speed


# --- memory ----------------------------------------------------------------------------------------


def fit_memory(costs: CostModel, fit: Calibration, trace: Trace) -> CostModel:
    """Weight and stash bytes per stage by least squares against the run's recorded memory (unchanged
    when the trace recorded none)."""
    schedule = schedule_of(trace.schedule)
    targets = _recorded_memory(trace, schedule, set(fit.steps_used))
    if not targets:
        return costs
    plan = make_plan(schedule, costs)
    timeline = run_plan(plan)
    known = memory_over_time(memory_plan(schedule, costs), plan, timeline)
    names = ["weight_bytes", "stash_bytes"]
    if any(a.kind is Kind.I for actions in schedule.actions for a in actions):
        names.append("weight_input_bytes")
    params = [(entry, name) for entry in range(len(costs.stages)) for name in names]
    columns = [_column(schedule, costs, entry, name) for entry, name in params]
    rows = [([column[rank][i] for column in columns], value - known[rank][i]) for rank, i, value in targets]
    solution = _least_squares(rows, len(params))
    fitted: dict[int, dict[str, int]] = {entry: {} for entry in range(len(costs.stages))}
    for (entry, name), value in zip(params, solution, strict=True):
        fitted[entry][name] = max(0, round(value))
    stages = []
    for entry, sizes in fitted.items():  # a split backward keeps part of the stash, never more than it
        if "weight_input_bytes" in sizes:
            sizes["weight_input_bytes"] = min(sizes["weight_input_bytes"], sizes["stash_bytes"])
        stages.append(replace(costs.stages[entry], **sizes))
    return replace(costs, stages=tuple(stages))


def _recorded_memory(trace: Trace, schedule: Schedule, steps: set[int]) -> list[tuple[int, int, int]]:
    """(rank, position in the rank's program, bytes) for every event of the used steps with a memory."""
    positions = [{action.key: i for i, action in enumerate(actions)} for actions in schedule.actions]
    out = []
    for event in trace.events:
        i = positions[event.rank].get(event.action.key)
        if event.memory is not None and i is not None and event.action.step in steps:
            out.append((event.rank, i, event.memory))
    return out


def _column(schedule: Schedule, costs: CostModel, entry: int, name: str) -> list[list[float]]:
    """Memory after every action per byte of one size of one stage, and nothing else held. (Program
    order, send buffers not freed: only AMDP's gradient and weight messages are weight-sized, and
    they are the one place this overcounts.)"""
    zero = tuple(
        replace(stage, weight_bytes=0, stash_bytes=0, weight_input_bytes=0, activation_bytes=0)
        for stage in costs.stages
    )
    sizes = {name: SIZE_UNIT}
    if name == "weight_input_bytes":  # kept bytes are a part of the stash: measure what keeping adds
        sizes["stash_bytes"] = SIZE_UNIT
    one = replace(costs, stages=tuple(replace(s, **sizes) if i == entry else s for i, s in enumerate(zero)))
    memory = memory_plan(schedule, one).static
    if name == "weight_input_bytes":
        stash = replace(one, stages=tuple(replace(s, weight_input_bytes=0) for s in one.stages))
        base = memory_plan(schedule, stash).static
        memory = [[x - y for x, y in zip(a, b, strict=True)] for a, b in zip(memory, base, strict=True)]
    return [[value / SIZE_UNIT for value in rank] for rank in memory]


def _least_squares(rows: list[tuple[list[float], float]], size: int) -> list[float]:
    """Solve the normal equations A^T A x = A^T b (Gaussian elimination; unidentified unknowns are 0)."""
    matrix = [[0.0] * (size + 1) for _ in range(size)]
    for coefficients, target in rows:
        for i, a in enumerate(coefficients):
            if a:
                for j, b in enumerate(coefficients):
                    matrix[i][j] += a * b
                matrix[i][size] += a * target
    solution = [0.0] * size
    pivots = []
    for column in range(size):
        pivot = max(range(len(pivots), size), key=lambda row: abs(matrix[row][column]), default=None)
        if pivot is None or abs(matrix[pivot][column]) < 1e-9:
            continue
        row = len(pivots)
        matrix[row], matrix[pivot] = matrix[pivot], matrix[row]
        for other in range(size):
            if other != row and matrix[other][column]:
                factor = matrix[other][column] / matrix[row][column]
                matrix[other] = [x - factor * y for x, y in zip(matrix[other], matrix[row], strict=True)]
        pivots.append(column)
    for row, column in enumerate(pivots):
        solution[column] = matrix[row][size] / matrix[row][column]
    return solution


# --- the cost file ---------------------------------------------------------------------------------


def calibration_toml(fit: Calibration, costs: CostModel, *, source: str) -> str:
    """The cost file with a header and, per fitted value, where it came from."""
    schedule = fit.schedule
    header = [
        f"# Calibrated by `pipesim calibrate` from {source}",
        f"# ({fit.source} trace of {schedule.name}, P = {schedule.ranks}, m = {schedule.microbatches}, "
        f"{schedule.steps} steps; steps used: {_steps(fit.steps_used)}).",
        "# Compute and message times: means, their spread kept as empirical jitter factors ([jitter],",
        "# [link] jitter). host_*: the host's time before each action (interpreter, posting, recording),",
        "# idle for the device; robust means (pauses beyond 3 interquartile ranges dropped).",
        "# warmup_*: how much longer the dropped first step's actions took than the means, in all,",
        "# added to the stage's first action of that kind.",
        "# Weight and stash bytes: least squares against the memory the run recorded.",
        *(
            ["# overlap_f_b: how the trace ran each OVERLAP_F_B pair (1: its halves one after the other)."]
            if costs.overlap_f_b != DEFAULT_OVERLAP_F_B
            else []
        ),
        *(f"# note: {note}" for note in fit.notes),
        "",
    ]
    return "\n".join(header) + "\n" + _annotate(dumps_costs(costs), fit)


def _annotate(text: str, fit: Calibration) -> str:
    """Times with units, and each fitted value's provenance as a comment on its line."""
    lines: list[str] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("["):
            table = line.strip("[]")
            if table == "link":
                lines.append(f"# {fit.link.note}")
        key, _, value = line.partition(" = ")
        estimate = _estimate(fit, table, key)
        if value and key in TIME_FIELDS and (table in ("defaults", "link") or table.startswith("stages.")):
            line = f"{key} = {_time(value)}"
        lines.append(f"{line}  # {estimate.describe()}" if estimate is not None else line)
    return "\n".join(lines) + "\n"


def _estimate(fit: Calibration, table: str, key: str) -> Estimate | None:
    if table == "link" and key == "latency":
        return fit.link.latency
    if table == "defaults" and fit.stages:
        return fit.stages[0].times.get(key)
    if table.startswith("stages."):
        entry = int(table.split(".")[1])
        return fit.stages[entry].times.get(key) if entry < len(fit.stages) else None
    return None


def _time(value: str) -> str:
    """A time in seconds as written by dumps_costs, with a readable unit (6 significant digits)."""
    seconds = float(value)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            return f'"{seconds / scale:.6g} {unit}"'
    return value


def _steps(steps: tuple[int, ...]) -> str:
    if not steps:
        return "none"
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}..{steps[-1]}"

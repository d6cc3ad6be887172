"""Carry a calibration to another P: the measured speed per unit of analytic work, re-split.

    from simulator.rescale import rescaled_costs
    costs, notes = rescaled_costs(calibrated, trace, ranks=4)     # what-if for P = 4 from a P = 2 run

A calibrated cost model describes the stages of the run it came from; another P cuts the model into other
stages. The analytic model (simulator/analytic.py) knows what each stage of either cut does: FLOPs of F,
I and W, parameters and stash bytes of the model the executor ran (its config in the trace's meta). So
for every time field the fit is, over the measured stages s,

    t_s = alpha x analytic_s + beta x [s is the first stage]

(least squares; beta takes what the analytic counts miss on the embedding stage, e.g. the table look-up),
and the new stages get alpha x analytic + beta on the first. Optimizer steps scale with parameters, sizes
by the measured / analytic ratio. Host times, warm-up and the link are the hardware's and the runtime's,
not the model's: each new stage takes those of the measured stage in the same position (first, last, or
the mean of the middle ones), the link as it was. What this cannot know (more ranks sharing the same
cores, other message sizes) is the error the what-if benchmark reports.
"""

from __future__ import annotations

from dataclasses import replace
from statistics import fmean

from simulator.analytic import stage_work
from simulator.costs import HOST_FIELDS, WARMUP_FIELDS, CostModel, StageCost
from simulator.presets import MODELS, ModelSpec
from simulator.presets import model as model_preset
from simulator.units import CostError
from traces.schema import Trace

ANALYTIC_TIME = {
    "forward": lambda w: w.forward_flops,
    "backward": lambda w: w.input_grad_flops + w.weight_grad_flops,
    "backward_weight": lambda w: w.weight_grad_flops,
    "optimizer_step": lambda w: w.parameters,
}
"""What each time field is proportional to."""


def run_model(trace: Trace) -> ModelSpec:
    """The model the executor ran, from the trace's meta; CostError when the trace does not say."""
    config = trace.meta.get("config")
    if not isinstance(config, dict) or config.get("model") not in MODELS:
        raise CostError(
            "the trace does not say which model its run trained (an executor trace's meta has it), so "
            "its costs cannot be carried to another P"
        )
    return model_preset(
        config["model"],
        layers=config.get("layers"),
        hidden=config.get("hidden"),
        seq_len=config.get("seq_len"),
        microbatch_size=config.get("microbatch_size"),
    )


def rescaled_costs(costs: CostModel, trace: Trace, *, stages: int) -> tuple[CostModel, list[str]]:
    """`costs` (calibrated on `trace`) carried to the same model cut into `stages` cost entries."""
    spec = run_model(trace)
    config = trace.meta["config"]
    split = tuple(config["split"]) if config.get("split") else None
    old = stage_work(replace(spec, split=split), len(costs.stages))
    new = stage_work(spec, stages)  # another P: the executor's balanced split
    measured = list(costs.stages)
    entries = [dict(_hardware(measured, stage, stages)) for stage in range(stages)]
    for name, work_of in ANALYTIC_TIME.items():
        values = [getattr(entry, name) for entry in measured]
        if name == "backward_weight" and any(value is None for value in values):
            continue
        alpha, beta = _fit([work_of(w) for w in old], values)
        for stage, work in enumerate(new):
            entries[stage][name] = max(0.0, alpha * work_of(work) + (beta if stage == 0 else 0.0))
    for name, work_of in (("weight_bytes", _param_bytes(spec)), ("stash_bytes", lambda w: w.stash_bytes)):
        ratio = _ratio([getattr(entry, name) for entry in measured], [work_of(w) for w in old])
        for stage, work in enumerate(new):
            entries[stage][name] = round(ratio * work_of(work))
    for entry in entries:
        entry["activation_bytes"] = measured[0].activation_bytes
        if entry.get("backward_weight") is not None:
            entry["backward_weight"] = min(entry["backward_weight"], entry["backward"])
    notes = [
        f"carried to {stages} stages: compute as the measured speed per analytic FLOP (optimizer steps "
        "per parameter), sizes by the measured / analytic ratio, host times, warm-up and link from the "
        "measured stage in the same position; more ranks on the same cores are not modelled",
    ]
    return replace(costs, stages=tuple(StageCost(**entry) for entry in entries)), notes


def _hardware(measured: list[StageCost], stage: int, stages: int):
    """Host and warm-up times of the measured stage in the same position (first, last, middle)."""
    if stage == 0 or stages == 1:
        source = [measured[0]]
    elif stage == stages - 1:
        source = [measured[-1]]
    else:
        source = measured[1:-1] or [measured[0], measured[-1]]
    for name in (*HOST_FIELDS, *WARMUP_FIELDS):
        yield name, fmean(getattr(entry, name) for entry in source)


def _fit(work: list[float], times: list[float]) -> tuple[float, float]:
    """Least squares of times = alpha x work + beta x [first]; one stage (or equal work): beta = 0."""
    rest = [(w, t) for w, t in zip(work[1:], times[1:], strict=True)]
    if not rest:
        return (times[0] / work[0] if work[0] else 0.0), 0.0
    alpha = sum(w * t for w, t in rest) / sum(w * w for w, _ in rest) if any(w for w, _ in rest) else 0.0
    return alpha, times[0] - alpha * work[0]


def _ratio(measured: list[int], analytic: list[float]) -> float:
    total = sum(analytic)
    return sum(measured) / total if total else 0.0


def _param_bytes(spec: ModelSpec):
    return lambda work: work.parameters * spec.dtype_bytes

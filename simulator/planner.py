"""Search tensor x pipeline x data parallelism, micro-batch, schedule, chunks and recompute for the fastest
configuration of a model on a cluster that fits in memory.

    from simulator.planner import SearchSpace, search
    space = SearchSpace(gpus=1024, global_batch=1536)
    result = search(model, cluster, space, jobs=2)
    result.ranked[0]                                  # the fastest that fits (a dict, as to_dict)

Note: two passes. Every configuration that can exist is first priced in closed form from its cost
model (microseconds each): the step time of its schedule,

    gpipe, 1f1b    (m + P - 1) (t_F + t_B) + t_OPT        interleaved   (m + (P-1)/v) (t_F + t_B) + t_OPT
    zb-h1          (m + (P-1)/3) (t_F + t_B) + t_OPT      2bw, amdp     m (t_F + t_B) + t_OPT
    pipedream      m (t_F + t_B + t_OPT)                  (one update per microbatch)

and its memory per GPU (weights x versions, gradients, optimizer state, the stash of the microbatches
in flight on the first rank). Those within MEMORY_MARGIN of the limit, best first, are simulated with
the SimPy model on a process pool (`candidates` of them); the simulation decides time and fit.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from schedules.registry import SCHEDULES, get_info
from simulator.cluster import ClusterSpec
from simulator.cluster_costs import ClusterCosts, cluster_costs
from simulator.parallel import ParallelConfig
from simulator.transformer import RECOMPUTE, TransformerConfig
from simulator.units import CostError

MEMORY_MARGIN = 1.25
"""A configuration whose closed-form memory is within this factor of the limit is simulated (the
closed form only prunes; the simulator's memory decides)."""
CHUNKS = (2, 3, 4)
"""Chunks per rank tried for the interleaved schedule (the model's layers must divide into pp x v)."""


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """What the search may vary, and what it must respect."""

    gpus: int
    """GPUs to use, all of them: tp x pp x dp."""
    global_batch: int
    """Sequences per optimizer step."""
    tps: tuple[int, ...] = (1, 2, 4, 8)
    """Tensor-parallel sizes tried (each must divide the heads)."""
    micro_batches: tuple[int, ...] = (1, 2, 4, 8)
    """Micro-batch sizes tried."""
    schedules: tuple[str, ...] = tuple(SCHEDULES)
    """Schedules tried."""
    recomputes: tuple[str, ...] = RECOMPUTE
    """Recompute modes tried."""
    dtype: str = "bf16"
    """Compute type."""
    dp_overlap: bool = False
    """Overlap the data-parallel all-reduce with the backward."""
    memory_limit: int | None = None
    """Bytes per GPU; None: the cluster's capacity."""


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A configuration and its closed-form price."""

    parallel: ParallelConfig
    """The configuration."""
    seconds: float
    """Closed-form step time."""
    memory: int
    """Closed-form bytes per GPU on the first rank."""


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """What the search found."""

    considered: int
    """Configurations that can exist."""
    simulated: int
    """Of them, those simulated."""
    ranked: list[dict[str, Any]] = field(default_factory=list)
    """Simulated configurations that fit, fastest first (ClusterPrediction.to_dict without metrics)."""
    too_big: list[dict[str, Any]] = field(default_factory=list)
    """Simulated configurations that did not fit, smallest memory first."""


def configurations(
    model: TransformerConfig, cluster: ClusterSpec, space: SearchSpace
) -> list[ParallelConfig]:
    """Every configuration of the space that can exist: tp divides the heads and stays in a node, pp
    divides the layers (pp x v for interleaved), dp x micro-batch divides the global batch, and the
    schedule accepts P and m."""
    out = []
    for tp in space.tps:
        if model.heads % tp or tp > cluster.gpus_per_node or space.gpus % tp:
            continue
        for pp in (pp for pp in range(1, model.layers + 1) if model.layers % pp == 0):
            if space.gpus % (tp * pp):
                continue
            dp = space.gpus // (tp * pp)
            for micro_batch in space.micro_batches:
                if space.global_batch % (dp * micro_batch):
                    continue
                out += _variants(model, space, tp=tp, pp=pp, dp=dp, micro_batch=micro_batch)
    return out


def _variants(model: TransformerConfig, space: SearchSpace, **sizes: int) -> list[ParallelConfig]:
    pp, m = sizes["pp"], space.global_batch // (sizes["dp"] * sizes["micro_batch"])
    out = []
    for name in space.schedules:
        info = get_info(name)
        if (info.needs_even_p and pp % 2) or (info.needs_m_ge_p and m < pp):
            continue
        if info.needs_m_multiple_of_p and m % pp:
            continue
        chunks = [v for v in CHUNKS if model.layers % (pp * v) == 0] if info.uses_chunks else [1]
        if info.uses_chunks and pp == 1:
            continue
        for v in chunks:
            for recompute in space.recomputes:
                out.append(
                    ParallelConfig(
                        **sizes,
                        global_batch=space.global_batch,
                        schedule=info.name,
                        chunks=v,
                        recompute=recompute,
                        sequence_parallel=sizes["tp"] > 1,
                        dtype=space.dtype,
                        dp_overlap=space.dp_overlap,
                    )
                )
    return out


def estimate(model: TransformerConfig, cluster: ClusterSpec, parallel: ParallelConfig) -> Estimate:
    """The closed-form step time and first-rank memory of one configuration (module note)."""
    built = cluster_costs(model, cluster, parallel)
    costs, p = built.costs, parallel
    entries = costs.stages
    forward = max(entry.forward for entry in entries)
    backward = max(entry.backward for entry in entries)
    optimizer = max(
        entry.optimizer_step + costs.optimizer_sync_time(entry.weight_bytes, entry.backward)
        for entry in entries
    )
    m, P, work = p.microbatches, p.pp, forward + backward
    fill = {"gpipe": P - 1, "1f1b": P - 1, "interleaved": (P - 1) / p.chunks, "zb-h1": (P - 1) / 3}
    if p.schedule == "pipedream":
        seconds = m * (work + optimizer)
    else:
        seconds = (m + fill.get(p.schedule, 0.0)) * work + optimizer
    return Estimate(parallel=p, seconds=seconds, memory=_memory(built, p))


def _memory(built: ClusterCosts, p: ParallelConfig) -> int:
    """Closed-form bytes on the first rank: weights x versions, gradients, optimizer, stash in flight."""
    costs, entry, m, P = built.costs, built.costs.stages[0], p.microbatches, p.pp
    versions = {"pipedream": P, "2bw": 2, "amdp": max(1, P // 2)}.get(p.schedule, 1)
    in_flight = {"gpipe": m, "amdp": P}.get(p.schedule, min(m, P))
    if p.schedule == "interleaved":
        in_flight = min(m, P) * (1 + (P - 1) / (P * p.chunks))
    static = entry.weight_bytes * (versions + 2) + costs.optimizer_state_bytes(entry)  # fp32 gradients
    return int(static + in_flight * entry.stash_bytes + built.working_bytes)


def evaluate(job: tuple[TransformerConfig, ClusterSpec, ParallelConfig, int | None]) -> dict[str, Any]:
    """Simulate one configuration (in a worker process); its summary without the per-rank metrics."""
    from simulator.cluster_run import predict

    model, cluster, parallel, limit = job
    summary = predict(model, cluster, parallel, memory_limit=limit).to_dict()
    summary.pop("metrics")
    summary["label"] = parallel.label()
    return summary


def search(
    model: TransformerConfig,
    cluster: ClusterSpec,
    space: SearchSpace,
    *,
    candidates: int = 32,
    jobs: int = 1,
    progress: Callable[[], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> SearchResult:
    """Price every configuration, simulate the `candidates` best that may fit, rank those that do."""
    limit = space.memory_limit if space.memory_limit is not None else cluster.memory_capacity
    usable = limit - cluster.memory_reserved
    configs = configurations(model, cluster, space)
    if not configs:
        raise CostError(
            f"no configuration of {space.gpus} GPUs can run a global batch of {space.global_batch} "
            f"for {model.name} (tp must divide {model.heads} heads, pp the {model.layers} layers)"
        )
    estimates = [estimate(model, cluster, parallel) for parallel in configs]
    hopeful = sorted(
        (e for e in estimates if e.memory <= usable * MEMORY_MARGIN), key=lambda e: (e.seconds, e.memory)
    )
    chosen = hopeful[:candidates] or sorted(estimates, key=lambda e: e.memory)[: max(1, candidates // 4)]
    if on_total:
        on_total(len(chosen))
    summaries = _simulate_all([(model, cluster, e.parallel, limit) for e in chosen], jobs, progress)
    fitting = sorted((s for s in summaries if s["fits"]), key=lambda s: s["iteration_time"])
    too_big = sorted((s for s in summaries if not s["fits"]), key=lambda s: s["memory_per_gpu"])
    return SearchResult(considered=len(configs), simulated=len(chosen), ranked=fitting, too_big=too_big)


def _simulate_all(jobs_list: list[tuple], jobs: int, progress: Callable[[], None] | None) -> list[dict]:
    if jobs <= 1:
        out = []
        for job in jobs_list:
            out.append(evaluate(job))
            if progress:
                progress()
        return out
    with ProcessPoolExecutor(max_workers=min(jobs, len(jobs_list))) as pool:
        futures = [pool.submit(evaluate, job) for job in jobs_list]
        for future in futures:
            future.add_done_callback(lambda _: progress and progress())
        return [future.result() for future in futures]


PARTS = {
    "idle": "idle time (pipeline bubble, waiting for messages)",
    "kernels": "forward and backward kernels of the busiest rank",
    "recompute": "recompute",
    "tp_comm": "tensor-parallel collectives",
    "optimizer": "optimizer step and exposed data-parallel all-reduce",
}
"""The parts of a step, as ClusterPrediction.breakdown names them, in words."""


def why_slower(best: dict[str, Any], other: dict[str, Any]) -> str:
    """One sentence: how much longer `other` takes per step than `best`, and on what."""
    delta = other["iteration_time"] - best["iteration_time"]
    share = delta / best["iteration_time"] if best["iteration_time"] > 0 else 0.0
    changes = {key: other["breakdown"][key] - best["breakdown"][key] for key in PARTS}
    worse = sorted(((v, k) for k, v in changes.items() if v > 0.005 * best["iteration_time"]), reverse=True)
    better = sorted((v, k) for k, v in changes.items() if v < -0.005 * best["iteration_time"])
    text = f"{other['label']} takes {delta:.3g} s ({100 * share:.1f}%) longer per step"
    if worse:
        text += ": " + ", ".join(f"{PARTS[k]} +{v:.3g} s" for v, k in worse)
    if better:
        text += "; it saves " + ", ".join(f"{PARTS[k]} {v:.3g} s" for v, k in better)
    memory = other["memory_per_gpu"] - best["memory_per_gpu"]
    text += f"; it needs {abs(memory) / 2**30:.1f} GiB {'more' if memory >= 0 else 'less'} per GPU"
    return text

"""Predict one training configuration at cluster scale: build its schedule and costs, simulate, summarise.

    from simulator.cluster import cluster_preset
    from simulator.cluster_run import predict
    from simulator.parallel import ParallelConfig
    from simulator.transformer import model_config
    prediction = predict(model_config("gpt3-175b"), cluster_preset("dgx-a100-80gb"),
                         ParallelConfig(tp=8, pp=8, dp=16, global_batch=1536, schedule="1f1b"))
    prediction.to_dict()["tflops_per_gpu"]

The schedule's action lists and the SimPy engine carry the timeline (a pipeline rank is one
tensor-parallel group; every replica runs the same timeline); simulator/cluster_costs.py prices each
action. What comes out, per optimizer step:

    iteration_time           the simulated step time (the makespan of one step for a synchronous
                             schedule; the steady step for an asynchronous one)
    tflops_per_gpu           model FLOPs / (GPUs x iteration time): 72 B s l h^2 (1 + s/6h + V/12lh)
    hardware_tflops_per_gpu  the same with the recomputed FLOPs counted
    mfu                      model FLOPs / (GPUs x iteration time x peak FLOP/s of the dtype)
    memory_per_gpu           the simulator's peak over ranks + one block's backward working set
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from schedules.ir import Kind
from schedules.registry import build_with_defaults, get_info
from simulator.cluster import ClusterSpec
from simulator.cluster_costs import ClusterCosts, cluster_costs
from simulator.parallel import ParallelConfig
from simulator.simulation import Simulation, simulate
from simulator.transformer import ATTENTION_CORE, TransformerConfig, layer_ops
from traces.metrics import Metrics


@dataclass(frozen=True, kw_only=True)
class ClusterPrediction:
    """A simulated configuration and what it says per optimizer step."""

    model: TransformerConfig
    """The transformer."""
    cluster: ClusterSpec
    """The cluster."""
    parallel: ParallelConfig
    """How the model is cut over it."""
    built: ClusterCosts
    """The cost model and the parts of it that the reports show."""
    simulation: Simulation
    """The simulated schedule (its trace and metrics)."""
    memory_limit: int
    """Bytes of memory per GPU (the cluster's capacity unless told); the configuration must fit in
    it less the cluster's memory_reserved."""

    @cached_property
    def metrics(self) -> Metrics:
        return self.simulation.metrics()

    @property
    def iteration_time(self) -> float:
        """Seconds per optimizer step."""
        return self.metrics.step_time

    @property
    def model_flops(self) -> float:
        """FLOPs of one step without recompute (the whole global batch, all GPUs)."""
        return self.model.model_flops(self.parallel.global_batch)

    @property
    def hardware_flops(self) -> float:
        """FLOPs one step runs: the model's and the recomputed forwards (full: every block's forward;
        selective: the attention core's two batched GEMMs, 4 B s^2 h per block)."""
        p, model = self.parallel, self.model
        if p.recompute == "none":
            return self.model_flops
        ops = layer_ops(model, micro_batch=1, tp=1, sequence_parallel=False)
        again = [op for op in ops if p.recompute == "full" or op.name in ATTENTION_CORE]
        return self.model_flops + model.layers * p.global_batch * sum(op.flops for op in again)

    def _per_gpu(self, flops: float) -> float:
        time = self.iteration_time
        return flops / (self.parallel.gpus * time) if time > 0 else 0.0

    @property
    def tflops_per_gpu(self) -> float:
        return self._per_gpu(self.model_flops) / 1e12

    @property
    def hardware_tflops_per_gpu(self) -> float:
        return self._per_gpu(self.hardware_flops) / 1e12

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation, 0..1."""
        return self._per_gpu(self.model_flops) / self.cluster.peak(self.parallel.dtype)

    @property
    def memory_per_gpu(self) -> int:
        """Peak bytes on the most loaded GPU: what the simulator tracked, plus the working set."""
        peaks = [peak or 0 for peak in self.metrics.peak_memory]
        return max(peaks) + self.built.working_bytes

    @property
    def usable_memory(self) -> int:
        """Bytes per GPU the model may use: the limit less what the runtime keeps."""
        return max(0, self.memory_limit - self.cluster.memory_reserved)

    @property
    def fits(self) -> bool:
        return self.memory_per_gpu <= self.usable_memory

    def memory_parts(self) -> dict[str, int]:
        """Bytes per GPU on the most loaded rank: one copy of weights, gradients (fp32), optimizer state
        (fp32 master and Adam's moments), and the rest of the simulator's peak (activations in flight,
        extra weight versions, send and receive buffers), plus the working set."""
        peaks = [peak or 0 for peak in self.metrics.peak_memory]
        rank = peaks.index(max(peaks))
        costs = self.built.costs
        entry = costs.stage(rank)
        static = {
            "weights": entry.weight_bytes,
            "gradients": entry.weight_bytes * (2 if costs.master_weights else 1),
            "optimizer": costs.optimizer_state_bytes(entry),
        }
        return {
            **static,
            "activations": max(peaks) - sum(static.values()),
            "working": self.built.working_bytes,
        }

    def breakdown(self) -> dict[str, float]:
        """Seconds of one step on the busiest pipeline rank (one GPU of it), by what it spends them on:
        kernels (forward and backward), recompute, tensor-parallel collectives, optimizer (with the
        exposed data-parallel all-reduce), and idle (the bubble, waiting for messages, blocking sends)."""
        plan, schedule = self.simulation.plan, self.simulation.schedule
        steps, m, layer = schedule.steps, self.parallel.microbatches, self.built.layer
        full = self.parallel.recompute == "full"
        rows = []
        for rank in range(schedule.ranks):
            entry, n = self.built.costs.stage(rank), self.built.layers_per_rank[rank]
            comm = n * (layer.forward_comm * (2 if full else 1) + layer.backward_comm)
            again = n * layer.recompute - (n * layer.forward_comm if full else 0.0)
            optimizer = sum(
                seconds
                for action, seconds in zip(schedule.actions[rank], plan.durations[rank], strict=True)
                if action.kind is Kind.OPT
            )
            work = m * (entry.forward + entry.backward)
            rows.append(
                (
                    work + optimizer / steps,
                    work - comm * m - again * m,
                    again * m,
                    comm * m,
                    optimizer / steps,
                )
            )
        _, kernels, recompute, comm, optimizer = max(rows)
        busy = kernels + recompute + comm + optimizer
        return {
            "kernels": kernels,
            "recompute": recompute,
            "tp_comm": comm,
            "optimizer": optimizer,
            "idle": max(0.0, self.iteration_time - busy),
        }

    def to_dict(self) -> dict[str, Any]:
        """The issue's keys first, then the configuration, the parts and the simulator's metrics."""
        p, layer = self.parallel, self.built.layer
        return {
            "iteration_time": self.iteration_time,
            "tflops_per_gpu": self.tflops_per_gpu,
            "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu,
            "mfu": self.mfu,
            "memory_per_gpu": self.memory_per_gpu,
            "memory_limit": self.memory_limit,
            "memory_usable": self.usable_memory,
            "fits": self.fits,
            "bubble_fraction": self.metrics.bubble_fraction,
            "model": self.model.name,
            "cluster": self.cluster.name,
            "gpus": p.gpus,
            "parallel": {
                "tp": p.tp,
                "pp": p.pp,
                "dp": p.dp,
                "micro_batch": p.micro_batch,
                "global_batch": p.global_batch,
                "microbatches": p.microbatches,
                "schedule": p.schedule,
                "chunks": p.chunks,
                "recompute": p.recompute,
                "sequence_parallel": p.sequence_parallel,
                "dtype": p.dtype,
                "dp_overlap": p.dp_overlap,
            },
            "memory_parts": self.memory_parts(),
            "layer_seconds": {
                "forward": layer.forward,
                "forward_comm": layer.forward_comm,
                "backward": layer.backward_input + layer.backward_weight,
                "backward_comm": layer.backward_comm,
                "recompute": layer.recompute,
            },
            "breakdown": self.breakdown(),
            "p2p_seconds": self.built.p2p_seconds,
            "dp_allreduce_seconds": self.built.dp_seconds,
            "metrics": self.metrics.to_dict(),
        }


def predict(
    model: TransformerConfig,
    cluster: ClusterSpec,
    parallel: ParallelConfig,
    *,
    steps: int | None = None,
    memory_limit: int | None = None,
    built: ClusterCosts | None = None,
) -> ClusterPrediction:
    """Simulate one configuration (CostError or ScheduleError, one line, if it cannot run). `built`
    replaces the cost model (flags over it); `steps` defaults to the registry's (1 sync, 4 async)."""
    built = built or cluster_costs(model, cluster, parallel)
    chunks = parallel.chunks if get_info(parallel.schedule).uses_chunks else None
    schedule = build_with_defaults(parallel.schedule, parallel.pp, parallel.microbatches, steps, chunks)
    meta = {"cluster": {"model": model.name, "cluster": cluster.name, "parallel": parallel.label()}}
    return ClusterPrediction(
        model=model,
        cluster=cluster,
        parallel=parallel,
        built=built,
        simulation=simulate(schedule, built.costs, meta=meta),
        memory_limit=memory_limit if memory_limit is not None else cluster.memory_capacity,
    )

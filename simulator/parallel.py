"""How a transformer is cut over a cluster: tensor, pipeline and data parallelism, micro-batches, recompute.

    from simulator.parallel import ParallelConfig, check_config
    parallel = ParallelConfig(tp=8, pp=16, dp=12, micro_batch=1, global_batch=1536,
                              schedule="interleaved", chunks=2, recompute="selective",
                              sequence_parallel=True)
    check_config(model, cluster, parallel)        # CostError, one line, for a configuration that
                                                  # cannot exist

Note: where the GPUs of a configuration sit (Megatron-LM's order: tensor-parallel ranks are neighbours,
then data-parallel replicas, then pipeline stages), global rank = tp_rank + tp (dp_rank + dp stage):

    node 0: [stage 0, replica 0: tp 0..7]        tp = 8: a stage's group is one node, its
    node 1: [stage 0, replica 1: tp 0..7]        data-parallel ring crosses nodes (one GPU per
    ...                                          node per ring), and so does every pipeline hop
    node d: [stage 1, replica 0: tp 0..7]        (tp x dp >= GPUs per node)
"""

from __future__ import annotations

from dataclasses import dataclass

from schedules.registry import SCHEDULES, get_info
from simulator.cluster import DTYPES, ClusterSpec
from simulator.transformer import RECOMPUTE, TransformerConfig
from simulator.units import CostError


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """One way to train a model on tp x pp x dp GPUs."""

    tp: int = 1
    """Tensor-parallel GPUs per pipeline stage (a pipeline rank is one such group)."""
    pp: int = 1
    """Pipeline stages P."""
    dp: int = 1
    """Data-parallel replicas of the whole pipeline."""
    micro_batch: int = 1
    """Sequences per microbatch b."""
    global_batch: int = 1
    """Sequences per optimizer step over all replicas B."""
    schedule: str = "1f1b"
    """Pipeline schedule (schedules/registry.py)."""
    chunks: int = 1
    """Model chunks per pipeline rank (interleaved only)."""
    recompute: str = "none"
    """Activation recompute: none, selective or full."""
    sequence_parallel: bool = False
    """Megatron's sequence parallelism: layernorm and dropout sharded over the tensor-parallel group,
    its all-reduces split into reduce-scatter + all-gather."""
    dtype: str = "bf16"
    """Compute type of the GEMMs: bf16, fp16 or fp8 (weights and activations 16-bit in all)."""
    dp_overlap: bool = False
    """True: the data-parallel all-reduce overlaps the last backward (PyTorch DDP); False: it runs
    after it (Megatron's local DDP)."""
    grad_accumulation_fusion: bool = True
    """True: weight-gradient GEMMs accumulate into the gradient buffer (Megatron-LM since 2022);
    False: each backward writes a fresh gradient that a separate kernel adds to the buffer, one more
    pass over the rank's gradients per microbatch (the 2021 code of the SC'21 measurements)."""
    split: tuple[int, ...] | None = None
    """Layers per pipeline stage (pp numbers, or pp x chunks); None: as even as possible."""

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def microbatches(self) -> int:
        """m, microbatches per replica per step: B / (dp x b)."""
        return self.global_batch // (self.dp * self.micro_batch)

    def label(self) -> str:
        """A short description: tp 8 x pp 16 x dp 12, b 1, interleaved v 2, selective + SP, bf16."""
        chunks = f" v {self.chunks}" if self.chunks > 1 else ""
        sp = " + SP" if self.sequence_parallel else ""
        overlap = ", DP overlap" if self.dp_overlap else ""
        return (
            f"tp {self.tp} x pp {self.pp} x dp {self.dp}, b {self.micro_batch}, "
            f"{self.schedule}{chunks}, {self.recompute}{sp}, {self.dtype}{overlap}"
        )


def check_config(model: TransformerConfig, cluster: ClusterSpec, parallel: ParallelConfig) -> None:
    """Raise CostError with one line naming the first reason the configuration cannot exist."""
    p = parallel
    for key in ("tp", "pp", "dp", "micro_batch", "global_batch", "chunks"):
        if getattr(p, key) < 1:
            raise CostError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(p, key)}")
    if model.heads % p.tp:
        raise CostError(f"--tp {p.tp} does not divide the model's {model.heads} attention heads")
    if model.ffn % p.tp or model.vocab % p.tp:
        raise CostError(f"--tp {p.tp} does not divide the MLP width {model.ffn} and vocabulary {model.vocab}")
    if p.pp * p.chunks > model.layers:
        pieces = f"{p.pp} stages x {p.chunks} chunks" if p.chunks > 1 else f"{p.pp} stages"
        raise CostError(f"--pp: {pieces} is more than the model's {model.layers} layers")
    if p.global_batch % (p.dp * p.micro_batch):
        raise CostError(
            f"--global-batch {p.global_batch} is not divisible by dp x micro-batch = {p.dp} x {p.micro_batch}"
        )
    if p.recompute not in RECOMPUTE:
        raise CostError(f"--recompute: unknown {p.recompute!r} (known: {', '.join(RECOMPUTE)})")
    if p.dtype not in DTYPES:
        raise CostError(f"--dtype: unknown {p.dtype!r} (known: {', '.join(DTYPES)})")
    cluster.peak(p.dtype)
    if p.sequence_parallel and p.tp == 1:
        raise CostError("--sequence-parallel needs --tp > 1 (it shards over the tensor-parallel group)")
    info = get_info(p.schedule)
    if p.chunks > 1 and not info.uses_chunks:
        looped = ", ".join(name for name, other in SCHEDULES.items() if other.uses_chunks)
        raise CostError(f"--chunks {p.chunks}: {info.name} takes no chunks (only {looped} do)")


def check_gpus(parallel: ParallelConfig, gpus: int | None) -> None:
    """A GPU count given beside tp, pp, dp must be their product."""
    if gpus is not None and gpus != parallel.gpus:
        product = f"{parallel.tp} x {parallel.pp} x {parallel.dp} = {parallel.gpus}"
        raise CostError(f"--gpus {gpus} is not tp x pp x dp = {product}")


def stages_cross_nodes(cluster: ClusterSpec, parallel: ParallelConfig) -> bool:
    """True if a pipeline hop leaves a node (then every hop is timed on the network: conservative
    where only some do, as when a few stages share a node)."""
    return parallel.pp > 1 and parallel.gpus > cluster.gpus_per_node


def per_node(cluster: ClusterSpec, parallel: ParallelConfig, group: str) -> int:
    """Members of one tensor- or data-parallel group on each node (see the module note)."""
    gpn, tp, dp = cluster.gpus_per_node, parallel.tp, parallel.dp
    if group == "tp":
        return min(tp, gpn)
    if tp >= gpn:
        return 1
    return min(dp, gpn // tp)

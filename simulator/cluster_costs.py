"""The cluster cost model: a transformer, a cluster and a parallel configuration -> the simulator's CostModel.

    from simulator.cluster_costs import cluster_costs
    built = cluster_costs(model, cluster, parallel)
    built.costs            # CostModel: one entry per pipeline rank (a tensor-parallel group)
    built.layer            # LayerTimes of one block for one microbatch on one GPU

Note: what each action of a pipeline rank costs (one microbatch, one GPU of its tensor-parallel group):

    F    layers x (forward kernels + tensor-parallel collectives) [+ embedding] [+ head and loss]
    B    layers x (recomputed forward + backward kernels + collectives) [+ head]; W is the weight-
         gradient GEMMs, I the rest (zero-bubble schedules)
    OPT  mixed-precision Adam over the rank's parameters (memory-bound) + the tied-embedding
         all-reduce between the first and last stage; the simulator adds the data-parallel ring
         all-reduce of the gradients (CostModel.dp_*), overlapped with the last backward or not
    SEND activation b s h / t bytes per GPU (Megatron sends each tensor-parallel rank's share) on
         the network when stages cross nodes, else on NVLink

Kernels are timed by simulator/cluster.py (a roofline per kernel with the GEMM efficiency curve);
collectives are exposed (not overlapped with compute), as in the measured Megatron-LM runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.analytic import split_layers
from simulator.cluster import ClusterSpec
from simulator.costs import CostModel, StageCost
from simulator.parallel import ParallelConfig, check_config, per_node, stages_cross_nodes
from simulator.transformer import (
    Op,
    TransformerConfig,
    activation_bytes_per_layer,
    head_activation_bytes,
    head_ops,
    layer_ops,
    recomputed,
)

DTYPE_BYTES = 2
"""Bytes of a weight, activation or gradient element (16-bit in every compute type)."""
BACKWARD_BYTES = {"attention dropout": 1.0, "dropout + residual 1": 1.0, "dropout + residual 2": 1.0}
"""Backward bytes over forward bytes of element-wise ops; 1.5 for the others (they read the saved
input and the incoming gradient and write one gradient, where the forward reads one and writes one)."""
OPTIMIZER_BYTES_PER_PARAMETER = 44
"""Device-memory bytes the mixed-precision Adam step moves per parameter: unscale 16-bit gradient
into fp32 (2 + 4), gradient norm (4), Adam (read gradient, master weight, m, v: 16; write master, m,
v: 12), copy the master weight back to 16 bits (4 + 2)."""


@dataclass(frozen=True, kw_only=True)
class LayerTimes:
    """Seconds of one transformer block for one microbatch on one GPU."""

    forward: float
    """Forward kernels."""
    forward_comm: float
    """Tensor-parallel collectives of the forward."""
    backward_input: float
    """Backward kernels but the weight-gradient GEMMs."""
    backward_weight: float
    """Weight-gradient GEMMs."""
    backward_comm: float
    """Tensor-parallel collectives of the backward."""
    recompute: float
    """Forward kernels (and collectives, full recompute) run again in the backward."""

    @property
    def total(self) -> float:
        return (
            self.forward
            + self.forward_comm
            + self.backward_input
            + self.backward_weight
            + self.backward_comm
            + self.recompute
        )


@dataclass(frozen=True, kw_only=True)
class ClusterCosts:
    """What cluster_costs built, with the parts the commands report."""

    costs: CostModel
    """The simulator's cost model: one entry per pipeline rank."""
    layer: LayerTimes
    """One block's times."""
    layers_per_rank: tuple[int, ...]
    """Blocks on each pipeline rank (all its chunks)."""
    working_bytes: int
    """Bytes a rank needs on top of what the simulator tracks: one block's activations while its
    backward (and recompute) runs."""
    p2p_seconds: float
    """One activation transfer between stages."""
    dp_seconds: float
    """The data-parallel all-reduce of the largest rank's gradients, not overlapped."""


def _op_time(cluster: ClusterSpec, op: Op, dtype: str) -> float:
    if op.gemms:
        return cluster.gemm_time(flops=op.flops, nbytes=op.bytes, gemms=op.gemms, dtype=dtype)
    return cluster.memory_time(op.bytes)


def _backward_times(cluster: ClusterSpec, ops: list[Op], dtype: str) -> tuple[float, float]:
    """(input-gradient seconds, weight-gradient seconds) of the backward of `ops`."""
    inputs = weights = 0.0
    for op in ops:
        if not op.gemms:
            inputs += cluster.memory_time(op.bytes * BACKWARD_BYTES.get(op.name, 1.5))
        elif op.weighted:  # an input gradient and a weight gradient, each as big as the forward
            one = _op_time(cluster, op, dtype)
            inputs, weights = inputs + one, weights + one
        else:  # attention's batched GEMMs: two input gradients
            inputs += 2 * _op_time(cluster, op, dtype)
    return inputs, weights


def _collectives(cluster: ClusterSpec, parallel: ParallelConfig, nbytes: float) -> dict[str, float]:
    """Seconds of one tensor-parallel all-reduce, reduce-scatter and all-gather of nbytes."""
    group, local = parallel.tp, per_node(cluster, parallel, "tp")
    return {
        kind: cluster.collective_time(kind, nbytes=nbytes, group=group, per_node=local)
        for kind in ("all_reduce", "reduce_scatter", "all_gather")
    }


def layer_times(model: TransformerConfig, cluster: ClusterSpec, parallel: ParallelConfig) -> LayerTimes:
    """One block: kernels by roofline, collectives per Megatron-LM's tensor (and sequence) parallelism.

    Without sequence parallelism a block all-reduces its T x h output twice in the forward (after
    the attention projection and fc2) and its input gradient twice in the backward. With it, each
    all-reduce becomes a reduce-scatter plus an all-gather, and the backward gathers the sharded
    inputs of qkv and fc1 once more for their weight gradients.
    """
    p, dtype = parallel, parallel.dtype
    ops = layer_ops(model, micro_batch=p.micro_batch, tp=p.tp, sequence_parallel=p.sequence_parallel)
    comm = _collectives(cluster, p, p.micro_batch * model.seq_len * model.hidden * DTYPE_BYTES)
    if p.sequence_parallel:
        forward_comm = 2 * (comm["all_gather"] + comm["reduce_scatter"])
        backward_comm = forward_comm + 2 * comm["all_gather"]
    else:
        forward_comm = backward_comm = 2 * comm["all_reduce"]
    inputs, weights = _backward_times(cluster, ops, dtype)
    again = recomputed(ops, p.recompute)
    return LayerTimes(
        forward=sum(_op_time(cluster, op, dtype) for op in ops),
        forward_comm=forward_comm,
        backward_input=inputs,
        backward_weight=weights,
        backward_comm=backward_comm,
        recompute=sum(_op_time(cluster, op, dtype) for op in again)
        + (forward_comm if p.recompute == "full" else 0.0),
    )


def _head_times(model: TransformerConfig, cluster: ClusterSpec, parallel: ParallelConfig) -> tuple:
    """(forward, input-gradient, weight-gradient) seconds of the last stage's head and loss."""
    p = parallel
    ops = head_ops(model, micro_batch=p.micro_batch, tp=p.tp, sequence_parallel=p.sequence_parallel)
    comm = _collectives(cluster, p, p.micro_batch * model.seq_len * model.hidden * DTYPE_BYTES)
    gather = comm["all_gather"] if p.sequence_parallel else 0.0  # the logits GEMM needs all tokens
    reduce = comm["reduce_scatter"] if p.sequence_parallel else comm["all_reduce"]
    inputs, weights = _backward_times(cluster, ops, p.dtype)
    forward = sum(_op_time(cluster, op, p.dtype) for op in ops) + gather
    return forward, inputs + reduce, weights


def _embedding_times(model: TransformerConfig, cluster: ClusterSpec, parallel: ParallelConfig) -> tuple:
    """(forward, backward) seconds of the first stage's vocabulary-parallel embedding."""
    p = parallel
    activation = p.micro_batch * model.seq_len * model.hidden * DTYPE_BYTES
    comm = _collectives(cluster, p, activation)
    lookup = cluster.memory_time(2 * activation)  # gather rows + positions, write the sum
    forward = lookup + (comm["reduce_scatter"] if p.sequence_parallel else comm["all_reduce"])
    backward = 2 * lookup + (comm["all_gather"] if p.sequence_parallel else 0.0)
    return forward, backward


def rank_parameters(model: TransformerConfig, parallel: ParallelConfig, layers: int, rank: int) -> int:
    """Parameters one GPU of pipeline rank `rank` holds: its blocks' share, the word embedding's share
    on the first and (tied, a copy) the last rank, position embeddings and final layernorm."""
    h, t = model.hidden, parallel.tp
    count = layers * model.layer_parameters // t
    if rank == 0:
        count += model.vocab * h // t + model.seq_len * h
    if rank == parallel.pp - 1:
        count += 2 * h + (model.vocab * h // t if parallel.pp > 1 else 0)
    return count


def cluster_costs(model: TransformerConfig, cluster: ClusterSpec, parallel: ParallelConfig) -> ClusterCosts:
    """The CostModel of `model` on `cluster` under `parallel` (CostError for an impossible one)."""
    check_config(model, cluster, parallel)
    p = parallel
    counts = split_layers(model.layers, p.pp, p.split)
    layer = layer_times(model, cluster, p)
    latency, bandwidth = cluster.p2p(across_nodes=stages_cross_nodes(cluster, p))
    message = p.micro_batch * model.seq_len * model.hidden * DTYPE_BYTES // p.tp
    stages = tuple(_stage(model, cluster, p, layer, rank, n) for rank, n in enumerate(counts))
    dp_local = per_node(cluster, p, "dp")
    dp_bandwidth, dp_latency = cluster.group_bandwidth(p.dp, dp_local)
    costs = CostModel(
        stages=stages,
        latency=latency,
        bandwidth=bandwidth,
        overlap=False,
        optimizer="adamw",
        master_weights=True,
        persistent_gradients=True,
        data_parallel=p.dp,
        dp_latency=dp_latency,
        dp_bandwidth=dp_bandwidth,
        dp_overlap=p.dp_overlap,
        microbatch_size=p.micro_batch,
        sequence_length=model.seq_len,
        memory_capacity=cluster.memory_capacity,
        source={"model": model.name, "cluster": cluster.name, "parallel": p.label()},
    )
    return ClusterCosts(
        costs=costs,
        layer=layer,
        layers_per_rank=tuple(counts),
        working_bytes=int(_working_bytes(model, p)),
        p2p_seconds=latency + message / bandwidth,
        dp_seconds=max(costs.allreduce_time(stage.weight_bytes) for stage in stages),
    )


def _stage(
    model: TransformerConfig, cluster: ClusterSpec, p: ParallelConfig, layer: LayerTimes, rank: int, n: int
) -> StageCost:
    first, last = rank == 0, rank == p.pp - 1
    tokens = p.micro_batch * model.seq_len
    forward = n * (layer.forward + layer.forward_comm)
    inputs = n * (layer.backward_input + layer.backward_comm + layer.recompute)
    weights = n * layer.backward_weight
    if first:
        embed_forward, embed_backward = _embedding_times(model, cluster, p)
        forward, inputs = forward + embed_forward, inputs + embed_backward
    if last:
        head_forward, head_inputs, head_weights = _head_times(model, cluster, p)
        forward, inputs, weights = forward + head_forward, inputs + head_inputs, weights + head_weights
    parameters = rank_parameters(model, p, n, rank)
    if not p.grad_accumulation_fusion:  # read the fresh gradient, read and write the buffer
        weights += cluster.memory_time(3 * parameters * DTYPE_BYTES)
    if p.pp > 1 and p.tp > 1 and not p.sequence_parallel:  # each receive gathers the tp shares
        gather = _collectives(cluster, p, tokens * model.hidden * DTYPE_BYTES)["all_gather"]
        forward, inputs = forward + p.chunks * gather, inputs + p.chunks * gather
    optimizer = cluster.memory_time(parameters * OPTIMIZER_BYTES_PER_PARAMETER)
    if p.pp > 1 and (first or last):  # the tied word embedding's gradients, summed across the two ranks
        embedding = model.vocab * model.hidden // p.tp * DTYPE_BYTES
        optimizer += cluster.collective_time("all_reduce", nbytes=embedding, group=2, per_node=1)
    stash = n * activation_bytes_per_layer(
        model,
        micro_batch=p.micro_batch,
        tp=p.tp,
        sequence_parallel=p.sequence_parallel,
        recompute=p.recompute,
    )
    if first:
        stash += tokens * model.hidden / p.tp  # the embedding's dropout mask
    if last:
        stash += head_activation_bytes(model, micro_batch=p.micro_batch, tp=p.tp)
    return StageCost(
        forward=forward,
        backward=inputs + weights,
        backward_weight=weights,
        optimizer_step=optimizer,
        activation_bytes=tokens * model.hidden * DTYPE_BYTES // p.tp,
        stash_bytes=int(stash),
        weight_input_bytes=int(min(stash, n * 7 * tokens * model.hidden * DTYPE_BYTES / p.tp)),
        weight_bytes=parameters * DTYPE_BYTES,
    )


def _working_bytes(model: TransformerConfig, p: ParallelConfig) -> float:
    """One block's activations that exist only while its backward runs: what recompute rebuilds (all
    of a block under full recompute, the attention core under selective) and two gradient buffers."""
    shape = {"micro_batch": p.micro_batch, "tp": p.tp, "sequence_parallel": p.sequence_parallel}
    rebuilt = activation_bytes_per_layer(model, **shape, recompute="none") - activation_bytes_per_layer(
        model, **shape, recompute=p.recompute
    )
    gradients = 2 * p.micro_batch * model.seq_len * model.hidden * DTYPE_BYTES
    return max(rebuilt, 0.0) + gradients

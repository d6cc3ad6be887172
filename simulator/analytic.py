"""The analytic cost model: FLOPs, bytes and times per pipeline stage from a transformer and a device.

    from simulator.analytic import cost_model
    from simulator.presets import device, model
    costs = cost_model(model("gpt2-small"), device("h100-sxm"), stages=4)

Note: what one microbatch of T = microbatch_size x sequence tokens costs (h hidden, s sequence, V vocab,
a heads; Megatron-LM's counts, Narayanan et al. 2021, attention counted in full, not causal-halved):

    block   forward  T (24 h^2 + 4 s h)      input grad  T (24 h^2 + 8 s h)    weight grad  T 24 h^2
    head    forward  T 2 h V                 input grad  T 2 h V               weight grad  T 2 h V
    params  block 12 h^2 + 13 h   embedding (V + s) h   head V h + 2 h
    stash   block T h (34 + 5 a s / h) x dtype/2 (Korthikanti et al. 2022, no recomputation), or with
            fused attention and no dropout (the executor's blocks) T (32 h x dtype/2 + 4 a + 16): no
            score matrices or masks; a 4-byte log-sum-exp per head and two layer norms' statistics
            head T (2 h + 2 V) x dtype, or for the executor's models T ((2 h + V) x dtype + 16): the
            norm's input and output, the log-softmax, the norm's statistics and the targets
            embedding T x 8 (token ids)
    kept    what a deferred W needs, the inputs of the layers with weights: block T 7 h x dtype
            (qkv, proj and fc inputs h each, out input 4 h), head T h x dtype
    message T h x dtype (the activation to the next stage; its gradient back is as big)

Times are FLOPs / (peak x efficiency), the peak of the model's dtype (fp32: the plain fp32 units). The
optimizer step is bound by memory bandwidth: it reads the weights, the gradient and its state and writes
the weights and the state, (3 + 2 x state copies) x weight bytes. Layers are split as the executor splits
them: layers // P each, the remainder to the middle stages first, then the first, then the last.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedules.workload import balanced_counts, split_problem
from simulator.costs import OPTIMIZER_STATE, CostModel, StageCost
from simulator.presets import DeviceSpec, ModelSpec
from simulator.units import CostError

ROTATION_ELEMENTS_PER_H2 = 2 * (9 + 1) + 2 * (1 + 1) + 2 * (16 + 1) + 2 * (1 + 16)
"""Sum of 2(r^2 + c^2) / h^2 over a block's matrices: qkv 3h x h, proj h x h, fc 4h x h, out h x 4h."""


@dataclass(frozen=True, kw_only=True)
class StageWork:
    """What one model stage does for one microbatch, before any device is involved."""

    layers: int
    """Transformer blocks on the stage."""
    forward_flops: float
    """FLOPs of F for one microbatch."""
    input_grad_flops: float
    """FLOPs of I (backward for inputs)."""
    weight_grad_flops: float
    """FLOPs of W (backward for weights)."""
    parameters: int
    """Parameters held (a count)."""
    matrix_parameters: int
    """Parameters in hidden 2-D matrices (Muon, basis rotation)."""
    rotation_elements: int
    """Sum of 2(r^2 + c^2) over those matrices."""
    stash_bytes: int
    """Bytes of activations kept per in-flight microbatch."""
    weight_input_bytes: int
    """Part of the stash that a deferred W needs: the inputs of the layers with weights."""
    activation_bytes: int
    """Bytes of the activation sent to the next stage."""


def split_layers(layers: int, stages: int, split: tuple[int, ...] | None = None) -> list[int]:
    """Blocks per stage: `split` as given (P numbers, or P x chunks that are summed chunk by chunk into
    the P cost entries), else balanced by schedules.workload.balanced_counts, as the executor splits."""
    if split is not None:
        return _given_split(layers, stages, split)
    if stages > layers:
        raise CostError(f"--model has {layers} layers, too few for {stages} stages")
    return balanced_counts(layers, stages)


def _given_split(layers: int, stages: int, split: tuple[int, ...]) -> list[int]:
    shown = ",".join(map(str, split))
    if len(split) % stages:
        raise CostError(f"--split {shown} gives {len(split)} pieces, expected {stages} (or a multiple)")
    problem = split_problem(layers, len(split), split)
    if problem is not None:
        raise CostError(f"--split {shown} {problem}")
    group = len(split) // stages  # interleaved: a cost entry is `chunks` consecutive pieces
    return [sum(split[i * group : (i + 1) * group]) for i in range(stages)]


def stage_work(spec: ModelSpec, stages: int) -> list[StageWork]:
    """FLOPs, parameters and bytes of every stage of `spec` cut into `stages`."""
    h, s, V, a = spec.hidden, spec.seq_len, spec.vocab, spec.heads
    tokens = spec.microbatch_size * s
    dtype = spec.dtype_bytes
    block_stash = tokens * h * (34 + 5 * a * s / h) * dtype / 2
    head_stash = (2 * h + 2 * V) * tokens * dtype
    if spec.fused_attention:  # measured against what autograd saves (tests/simulator/test_analytic.py)
        block_stash = tokens * (32 * h * dtype / 2 + 4 * a + 16)
        head_stash = tokens * ((2 * h + V) * dtype + 16)
    out = []
    for stage, n in enumerate(split_layers(spec.layers, stages, spec.split)):
        first, last = stage == 0, stage == stages - 1
        head = 2 * h * V * tokens if last else 0
        parameters = (
            n * (12 * h * h + 13 * h) + ((V + s) * h if first else 0) + (V * h + 2 * h if last else 0)
        )
        stash = n * block_stash + (8 * tokens if first else 0) + (head_stash if last else 0)
        kept = n * 7 * tokens * h * dtype + (tokens * h * dtype if last else 0)
        out.append(
            StageWork(
                layers=n,
                forward_flops=n * tokens * (24 * h * h + 4 * s * h) + head,
                input_grad_flops=n * tokens * (24 * h * h + 8 * s * h) + head,
                weight_grad_flops=n * tokens * 24 * h * h + head,
                parameters=parameters,
                matrix_parameters=n * 12 * h * h,
                rotation_elements=n * ROTATION_ELEMENTS_PER_H2 * h * h,
                stash_bytes=int(stash),
                weight_input_bytes=kept,
                activation_bytes=tokens * h * dtype,
            )
        )
    return out


def stage_cost(work: StageWork, spec: ModelSpec, device: DeviceSpec, optimizer: str) -> StageCost:
    """Times and bytes of one stage on one device."""
    dtype = spec.dtype_bytes
    weight_bytes = work.parameters * dtype
    touched = (3 + 2 * OPTIMIZER_STATE[optimizer]) * weight_bytes
    flops = device.flops_at(spec.dtype)
    return StageCost(
        forward=work.forward_flops / flops,
        backward=(work.input_grad_flops + work.weight_grad_flops) / flops,
        backward_weight=work.weight_grad_flops / flops,
        optimizer_step=touched / device.memory_bandwidth,
        activation_bytes=work.activation_bytes,
        stash_bytes=work.stash_bytes,
        weight_input_bytes=work.weight_input_bytes,
        weight_bytes=weight_bytes,
        matrix_bytes=work.matrix_parameters * dtype,
        rotation_bytes=work.rotation_elements * dtype,
    )


def cost_model(
    spec: ModelSpec, device: DeviceSpec, *, stages: int, optimizer: str = "adamw", data_parallel: int = 1
) -> CostModel:
    """The CostModel of `spec` cut into `stages` model stages on `device` (links from the device too)."""
    if optimizer not in OPTIMIZER_STATE:
        raise CostError(f"optimizer: unknown {optimizer!r} (known: {', '.join(OPTIMIZER_STATE)})")
    return CostModel(
        stages=tuple(stage_cost(work, spec, device, optimizer) for work in stage_work(spec, stages)),
        latency=device.link_latency,
        bandwidth=device.link_bandwidth,
        optimizer=optimizer,
        data_parallel=data_parallel,
        dp_latency=device.dp_latency,
        dp_bandwidth=device.dp_bandwidth,
        microbatch_size=spec.microbatch_size,
        sequence_length=spec.seq_len,
        memory_capacity=device.memory,
        source={"model": spec.name, "device": device.name},
    )

"""Named transformer and device descriptions for the analytic cost model (simulator/analytic.py).

    from simulator.presets import model, device
    model("gpt2-small"), device("h100-sxm")
    pipesim simulate --schedule 1f1b -p 4 -m 16 --model gpt2-small --device a100-80gb

The small models have the executor's shapes (executor/training/model.py: byte vocabulary, learned positions,
4x MLP, biases), so a prediction and a measured run describe the same network. Device numbers are
vendor peak figures (dense, no sparsity) times an achievable fraction; `cpu` describes this project's
2-core AMD EPYC (Zen 4) test machine, its fraction measured with a 1024^3 float32 matmul in torch
(about 46 GFLOP/s of 166 peak).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from schedules.workload import GPT_SHAPES
from simulator.units import CostError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A GPT-style decoder: embedding, `layers` pre-norm blocks (attention + 4x MLP), norm, head."""

    name: str
    """Preset name."""
    layers: int
    """Transformer blocks."""
    hidden: int
    """Width of the residual stream (features)."""
    heads: int
    """Attention heads per block."""
    seq_len: int
    """Tokens per sample (context length)."""
    vocab: int
    """Vocabulary size (tokens)."""
    microbatch_size: int = 8
    """Samples per microbatch."""
    dtype: str = "fp32"
    """Element type of weights, activations, gradients and optimizer state: fp32, bf16 or fp16."""
    split: tuple[int, ...] | None = None
    """Blocks per stage as the executor's --split gives them; None: balanced (simulator/analytic.py)."""
    fused_attention: bool = False
    """Attention through one fused kernel and no dropout, as the executor's blocks run it
    (scaled_dot_product_attention): a block keeps no score matrices and no dropout masks. False counts
    the stash as Korthikanti et al. 2022 do (unfused attention with dropout)."""

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "seq_len", "vocab", "microbatch_size"):
            if getattr(self, name) < 1:
                raise CostError(f"model {self.name}: {name} must be at least 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise CostError(
                f"model {self.name}: hidden {self.hidden} is not a multiple of heads {self.heads}"
            )
        if self.dtype not in DTYPE_BYTES:
            raise CostError(f"model {self.name}: dtype {self.dtype!r} (known: {', '.join(DTYPE_BYTES)})")

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    """One accelerator (or CPU) and its links."""

    name: str
    """Preset name."""
    peak_flops: float
    """FLOP/s of dense 16-bit (bf16, fp16) matrix products."""
    fp32_flops: float
    """FLOP/s in fp32 (a GPU's plain fp32 units, no TF32: what PyTorch uses by default)."""
    efficiency: float
    """Achievable fraction of peak_flops for transformer matmuls (0..1)."""
    memory: int
    """Bytes of device memory."""
    memory_bandwidth: float
    """Bytes/s of device memory (the optimizer step is bound by it)."""
    link_bandwidth: float
    """Bytes/s of one point-to-point link, one direction (pipeline sends)."""
    link_latency: float
    """Seconds per point-to-point transfer besides its bytes."""
    dp_bandwidth: float
    """Bytes/s per device for the data-parallel all-reduce (between nodes)."""
    dp_latency: float
    """Seconds per ring hop of the data-parallel all-reduce."""

    def __post_init__(self) -> None:
        if not 0 < self.efficiency <= 1:
            raise CostError(f"device {self.name}: efficiency must be in (0, 1], got {self.efficiency}")

    def peak_at(self, dtype: str) -> float:
        """Peak FLOP/s for a model of this element type."""
        return self.fp32_flops if dtype == "fp32" else self.peak_flops

    def flops_at(self, dtype: str) -> float:
        """FLOP/s actually reached by a model of this element type."""
        return self.peak_at(dtype) * self.efficiency


def _executor_model(name: str) -> Callable[[], ModelSpec]:
    """A model the executor trains (schedules.workload.GPT_SHAPES), fp32, 8 sequences per microbatch,
    fused attention."""
    return lambda: ModelSpec(name=name, fused_attention=True, **asdict(GPT_SHAPES[name]))


def gpt3_1_3b() -> ModelSpec:
    """GPT-3 XL (Brown et al. 2020, table 2.1) with GPT-2's BPE vocabulary, bf16."""
    return ModelSpec(
        name="gpt3-1.3b",
        layers=24,
        hidden=2048,
        heads=16,
        seq_len=2048,
        vocab=50257,
        microbatch_size=1,
        dtype="bf16",
    )


def gpt3_6_7b() -> ModelSpec:
    """GPT-3 6.7B (Brown et al. 2020, table 2.1), bf16."""
    return ModelSpec(
        name="gpt3-6.7b",
        layers=32,
        hidden=4096,
        heads=32,
        seq_len=2048,
        vocab=50257,
        microbatch_size=1,
        dtype="bf16",
    )


def h100_sxm() -> DeviceSpec:
    """NVIDIA H100 SXM5 80GB: 989 TFLOP/s dense bf16, 67 fp32, HBM3 3.35 TB/s, NVLink 4 (900 GB/s both
    ways), one 400 Gbit/s NDR InfiniBand port per GPU between nodes."""
    return DeviceSpec(
        name="h100-sxm",
        peak_flops=989e12,
        fp32_flops=67e12,
        efficiency=0.5,
        memory=80 * 10**9,
        memory_bandwidth=3.35e12,
        link_bandwidth=450e9,
        link_latency=5e-6,
        dp_bandwidth=50e9,
        dp_latency=10e-6,
    )


def a100_80gb() -> DeviceSpec:
    """NVIDIA A100 SXM4 80GB: 312 TFLOP/s dense bf16, 19.5 fp32, HBM2e 2.04 TB/s, NVLink 3 (600 GB/s
    both ways), one 200 Gbit/s HDR InfiniBand port per GPU between nodes."""
    return DeviceSpec(
        name="a100-80gb",
        peak_flops=312e12,
        fp32_flops=19.5e12,
        efficiency=0.5,
        memory=80 * 10**9,
        memory_bandwidth=2.039e12,
        link_bandwidth=300e9,
        link_latency=5e-6,
        dp_bandwidth=25e9,
        dp_latency=10e-6,
    )


def cpu() -> DeviceSpec:
    """This machine: 2 Zen 4 cores at 2.6 GHz, 32 float32 FLOP per cycle each (166 GFLOP/s peak), 23 GiB;
    ranks talk through gloo over loopback TCP."""
    return DeviceSpec(
        name="cpu",
        peak_flops=166e9,
        fp32_flops=166e9,
        efficiency=0.28,
        memory=23 * 2**30,
        memory_bandwidth=20e9,
        link_bandwidth=2e9,
        link_latency=50e-6,
        dp_bandwidth=2e9,
        dp_latency=50e-6,
    )


MODELS: dict[str, Callable[[], ModelSpec]] = {
    **{name: _executor_model(name) for name in GPT_SHAPES},
    "gpt3-1.3b": gpt3_1_3b,
    "gpt3-6.7b": gpt3_6_7b,
}
DEVICES: dict[str, Callable[[], DeviceSpec]] = {"h100-sxm": h100_sxm, "a100-80gb": a100_80gb, "cpu": cpu}


def model(name: str, **shape: object) -> ModelSpec:
    """A model preset by name, with fields replaced as the executor's flags do (layers, hidden,
    seq_len, microbatch_size, split); CostError naming the known presets otherwise."""
    if name not in MODELS:
        raise CostError(f"--model: unknown preset {name!r} (known: {', '.join(MODELS)})")
    changes = {key: value for key, value in shape.items() if value is not None}
    return replace(MODELS[name](), **changes) if changes else MODELS[name]()


def device(name: str) -> DeviceSpec:
    """A device preset by name; CostError naming the known ones otherwise."""
    if name not in DEVICES:
        raise CostError(f"--device: unknown preset {name!r} (known: {', '.join(DEVICES)})")
    return DEVICES[name]()

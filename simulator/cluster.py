"""A GPU cluster: nodes of GPUs, the links inside and between them, and what each GPU computes and holds.

    from simulator.cluster import cluster_preset
    cluster = cluster_preset("dgx-a100-80gb")
    cluster.gemm_time(flops=2.3e11, nbytes=1e8, gemms=1, dtype="fp16")    # seconds, on one GPU
    cluster.collective_time("all_reduce", nbytes=50e6, group=8, gpus_per_node_in_group=8)

Note: how a collective of a group of n GPUs is timed (ring algorithms, as NCCL's for large messages).
The group has k of its members on each node (k = n inside a node). With every GPU's own NIC on the
inter-node fabric (the rail-optimised DGX SuperPOD), NCCL runs k rings side by side, each leaving a
node through a different NIC, so the group moves data at k x the per-GPU network bandwidth (never
more than NVLink):

    all-reduce                 2 (n-1)/n x bytes / B + 2 (n-1) x latency
    reduce-scatter, all-gather   (n-1)/n x bytes / B +   (n-1) x latency
    B = NVLink bandwidth x its efficiency                    (the whole group on one node)
        min(k x network bandwidth, NVLink) x network efficiency   (otherwise)

`bytes` is the whole (unsharded) tensor. A point-to-point transfer between nodes uses one GPU's NIC.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from simulator.units import CostError

DTYPES = ("bf16", "fp16", "fp8")
"""Compute types of the cluster model (weights and activations are 16-bit in all of them; fp8 runs the
GEMMs in fp8, as Transformer Engine does)."""
COLLECTIVE_STEPS = {"all_reduce": 2, "reduce_scatter": 1, "all_gather": 1}
"""Ring steps per member, in units of (n-1)/n x bytes."""


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """Nodes of identical GPUs. Rates in bytes/s and FLOP/s, times in seconds, sizes in bytes."""

    name: str
    """Preset name."""
    gpus_per_node: int
    """GPUs in one node, joined by NVLink/NVSwitch."""
    peak_flops: dict[str, float]
    """Dense tensor-core FLOP/s per compute type (bf16, fp16, fp8); a type missing is unsupported."""
    gemm_efficiency: tuple[tuple[float, float], ...]
    """(FLOPs of one GEMM, fraction of peak it reaches), by increasing FLOPs; interpolated linearly in
    log(FLOPs), flat beyond both ends."""
    memory_bandwidth: float
    """Bytes/s of device memory (HBM)."""
    memory_efficiency: float
    """Fraction of memory_bandwidth that element-wise kernels and the optimizer step reach."""
    memory_capacity: int
    """Bytes of device memory per GPU."""
    memory_reserved: int
    """Bytes of it a training process cannot give the model: the CUDA context and library workspaces,
    NCCL's buffers, the caching allocator's fragmentation."""
    intra_bandwidth: float
    """Bytes/s one GPU sends on NVLink, one direction."""
    intra_latency: float
    """Seconds per step of a collective or per transfer inside a node."""
    intra_efficiency: float
    """Fraction of intra_bandwidth that NCCL collectives reach (bus bandwidth / link bandwidth)."""
    inter_bandwidth: float
    """Bytes/s of one GPU's network port between nodes, one direction."""
    inter_latency: float
    """Seconds per step of a collective or per transfer between nodes."""
    inter_efficiency: float
    """Fraction of inter_bandwidth that transfers and collectives reach."""

    def __post_init__(self) -> None:
        if self.gpus_per_node < 1:
            raise CostError(f"cluster {self.name}: gpus_per_node must be at least 1")
        for key in ("memory_efficiency", "intra_efficiency", "inter_efficiency"):
            if not 0 < getattr(self, key) <= 1:
                raise CostError(f"cluster {self.name}: {key} must be in (0, 1], got {getattr(self, key)}")
        points = self.gemm_efficiency
        if not points or any(not 0 < eff <= 1 for _, eff in points):
            raise CostError(f"cluster {self.name}: gemm_efficiency needs points with efficiency in (0, 1]")
        if any(later[0] <= earlier[0] for earlier, later in pairwise(points)):
            raise CostError(f"cluster {self.name}: gemm_efficiency must be sorted by increasing FLOPs")

    def peak(self, dtype: str) -> float:
        """Dense FLOP/s of a compute type; CostError if the GPU has none (fp8 on an A100)."""
        if dtype not in self.peak_flops:
            known = ", ".join(self.peak_flops)
            raise CostError(f"--dtype {dtype}: {self.name} has no {dtype} tensor cores (it has {known})")
        return self.peak_flops[dtype]

    def efficiency(self, flops: float) -> float:
        """Fraction of peak one GEMM of `flops` reaches (the curve; small GEMMs run far below peak)."""
        points = self.gemm_efficiency
        if flops <= points[0][0]:
            return points[0][1]
        for (x0, y0), (x1, y1) in pairwise(points):
            if flops <= x1:
                share = (math.log(flops) - math.log(x0)) / (math.log(x1) - math.log(x0))
                return y0 + share * (y1 - y0)
        return points[-1][1]

    def gemm_time(self, *, flops: float, nbytes: float, gemms: int, dtype: str) -> float:
        """Seconds for `gemms` equal GEMMs of flops/gemms each: compute at the curve's efficiency, or
        memory traffic, whichever is slower (a roofline per kernel)."""
        each = flops / max(gemms, 1)
        compute = flops / (self.peak(dtype) * self.efficiency(each))
        return max(compute, self.memory_time(nbytes))

    def memory_time(self, nbytes: float) -> float:
        """Seconds to move nbytes through device memory at the achieved bandwidth."""
        return nbytes / (self.memory_bandwidth * self.memory_efficiency)

    def group_bandwidth(self, group: int, per_node: int) -> tuple[float, float]:
        """(bytes/s, seconds per step) of a group of `group` GPUs with `per_node` of them on each node."""
        if group <= per_node:
            return self.intra_bandwidth * self.intra_efficiency, self.intra_latency
        rails = min(per_node * self.inter_bandwidth, self.intra_bandwidth)
        return rails * self.inter_efficiency, self.inter_latency

    def collective_time(self, kind: str, *, nbytes: float, group: int, per_node: int) -> float:
        """Seconds of a ring collective (all_reduce, reduce_scatter, all_gather) of an nbytes tensor."""
        if group <= 1 or nbytes <= 0:
            return 0.0
        bandwidth, latency = self.group_bandwidth(group, per_node)
        steps = COLLECTIVE_STEPS[kind] * (group - 1)
        return steps / group * nbytes / bandwidth + steps * latency

    def p2p(self, *, across_nodes: bool) -> tuple[float, float]:
        """(latency s, bandwidth bytes/s) of one point-to-point transfer."""
        if across_nodes:
            return self.inter_latency, self.inter_bandwidth * self.inter_efficiency
        return self.intra_latency, self.intra_bandwidth * self.intra_efficiency


def dgx_a100_80gb() -> ClusterSpec:
    """NVIDIA DGX A100 80GB nodes on HDR InfiniBand, as NVIDIA's Selene (the published measurements).

    Peak 312 TFLOP/s dense fp16/bf16, no fp8 (A100 datasheet). HBM2e 2.039 TB/s, 80 GB (datasheet).
    NVLink 3: 12 links x 25 GB/s = 300 GB/s per direction per GPU through NVSwitch (DGX A100 user
    guide). Network: 8 HDR 200 Gb/s ports per node, one per GPU = 25 GB/s (DGX A100 / SuperPOD
    reference architecture). Efficiencies and latencies: docs/cluster.md says why each has its value.
    """
    return ClusterSpec(
        name="dgx-a100-80gb",
        gpus_per_node=8,
        peak_flops={"bf16": 312e12, "fp16": 312e12},
        gemm_efficiency=A100_GEMM_EFFICIENCY,
        memory_bandwidth=2.039e12,
        memory_efficiency=0.7,
        memory_capacity=80 * 2**30,
        memory_reserved=5 * 2**30,
        intra_bandwidth=300e9,
        intra_latency=5e-6,
        intra_efficiency=0.7,
        inter_bandwidth=25e9,
        inter_latency=10e-6,
        inter_efficiency=0.9,
    )


def dgx_h100() -> ClusterSpec:
    """NVIDIA DGX H100 nodes on NDR InfiniBand.

    Peak 989 TFLOP/s dense bf16/fp16 and 1979 dense fp8 (H100 SXM5 datasheet). HBM3 3.35 TB/s, 80 GB.
    NVLink 4: 18 links x 25 GB/s = 450 GB/s per direction per GPU (NVSwitch gen 3). Network: 8
    ConnectX-7 NDR 400 Gb/s ports per node, one per GPU = 50 GB/s (DGX H100 user guide).
    Efficiencies as for the A100 (docs/cluster.md), the GEMM curve lower: the published H100 GEMM
    rates reach about 70% of the dense peak, against about 85% on the A100.
    """
    return ClusterSpec(
        name="dgx-h100",
        gpus_per_node=8,
        peak_flops={"bf16": 989.4e12, "fp16": 989.4e12, "fp8": 1978.9e12},
        gemm_efficiency=H100_GEMM_EFFICIENCY,
        memory_bandwidth=3.35e12,
        memory_efficiency=0.8,
        memory_capacity=80 * 2**30,
        memory_reserved=5 * 2**30,
        intra_bandwidth=450e9,
        intra_latency=5e-6,
        intra_efficiency=0.7,
        inter_bandwidth=50e9,
        inter_latency=10e-6,
        inter_efficiency=0.9,
    )


A100_GEMM_EFFICIENCY = ((1e8, 0.25), (1e9, 0.45), (1e10, 0.62), (1e11, 0.72), (1e12, 0.77))
"""Fraction of the A100's 312 TFLOP/s that one fp16 GEMM of so many FLOPs reaches (docs/cluster.md)."""
H100_GEMM_EFFICIENCY = ((1e8, 0.12), (1e9, 0.3), (1e10, 0.5), (1e11, 0.65), (1e12, 0.72))
"""The same for the H100's 989 TFLOP/s (a faster GPU needs bigger GEMMs to fill it)."""

CLUSTERS: dict[str, Callable[[], ClusterSpec]] = {"dgx-a100-80gb": dgx_a100_80gb, "dgx-h100": dgx_h100}


def cluster_preset(name: str) -> ClusterSpec:
    """A cluster preset by name; CostError naming the known ones otherwise."""
    if name not in CLUSTERS:
        raise CostError(f"--cluster: unknown preset {name!r} (known: {', '.join(CLUSTERS)})")
    return CLUSTERS[name]()

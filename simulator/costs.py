"""The simulator's cost model: what every action costs in time and bytes, and how links and memory behave.

Three ways to get one (docs/cost-model.md documents every field and its unit):

    CostModel.uniform(forward=1, backward=2)              # explicit, in code (seconds)
    load_costs("costs.toml")                              # explicit, from a TOML file
    analytic.cost_model(presets.model("gpt2-small"), presets.device("h100-sxm"), ranks=8)

and flags override any of them (`with_overrides`). A cost model describes the model cut into S stages
(S = stages_per_pipeline / chunks of the schedule it runs); a schedule with v chunks per rank runs each
of its virtual stages at 1/v of the entry's compute time, weight bytes and stash bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from schedules.costs import DEFAULT_OVERLAP_F_B
from simulator.links import ring_allreduce_time, transfer_time
from simulator.units import CostError

OPTIMIZER_STATE = {"adamw": 2, "nadamw": 2, "basis-rotation": 2, "muon": 1, "sgd": 1, "none": 0}
"""Optimizer state, in copies of the weights it applies to (AdamW: m and v; Muon, SGD: momentum).
Muon and basis rotation apply to the hidden matrices (StageCost.matrix_bytes) and AdamW to the rest;
basis rotation adds its bases, StageCost.rotation_bytes."""

JITTERS = ("none", "normal", "lognormal", "uniform")
"""Parametric jitter distributions (the --jitter flag's choices)."""
EMPIRICAL = "empirical"
"""A jitter drawn from a list of factors (CostModel.jitter_factors), as calibration fits it."""
HOST_FIELDS = ("host_forward", "host_backward", "host_optimizer_step", "host_send", "host_recv")
"""StageCost's host times: what a real runtime spends around each action, besides the action itself."""
WARMUP_FIELDS = ("warmup_forward", "warmup_backward", "warmup_optimizer_step")
"""StageCost's extra time on the first F, first backward and first OPT of a stage."""
DEFAULT_JITTER_SIGMA = 0.05
"""Relative spread of the jitter when a distribution is chosen without a sigma (5%)."""
SIZE_FIELDS = ("activation_bytes", "stash_bytes", "weight_input_bytes", "weight_bytes", "rotation_bytes")


def _check_time(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CostError(f"{name}: expected seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise CostError(f"{name}: must be a finite time >= 0 seconds, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class StageCost:
    """Cost of one model stage for one microbatch (the whole stage, before dividing by chunks)."""

    forward: float = 1.0
    """Seconds for the forward (F)."""
    backward: float = 2.0
    """Seconds for the full backward (B = I + W)."""
    backward_weight: float | None = None
    """Seconds for the weight-gradient part W of the backward; None = half of `backward`.
    The input-gradient part I takes the rest: backward - backward_weight."""
    optimizer_step: float = 0.0
    """Seconds for the stage's optimizer step (OPT), without any data-parallel all-reduce."""
    activation_bytes: int = 0
    """Bytes of the activation sent to the next stage per microbatch (the gradient sent back is as big)."""
    stash_bytes: int = 0
    """Bytes of activations kept from a forward until its backward, per in-flight microbatch."""
    weight_input_bytes: int = 0
    """Part of stash_bytes that a split backward keeps from I until W (the inputs of the layers with
    weights); I frees the rest. Unused by a full backward B, which frees all of stash_bytes."""
    weight_bytes: int = 0
    """Bytes of one copy of the stage's weights (its gradient buffer is as big)."""
    rotation_bytes: int = 0
    """Extra optimizer-state bytes under basis rotation: 2(r^2 + c^2) elements per r x c matrix."""
    matrix_bytes: int | None = None
    """Bytes of the hidden 2-D matrices, which Muon and basis rotation treat (the rest uses AdamW);
    None = all of weight_bytes."""
    host_forward: float = 0.0
    """Seconds the rank's host spends before each F of the stage, computing nothing (a real runtime's
    interpreter, bookkeeping and trace recording; calibration fits it from a measured trace)."""
    host_backward: float = 0.0
    """Seconds of host time before each B, I or W of the stage."""
    host_optimizer_step: float = 0.0
    """Seconds of host time before each OPT of the stage (a measured run with gradient clipping also
    spends its global-norm all-reduce here)."""
    host_send: float = 0.0
    """Seconds of host time before each send of the stage: posting it (and the receives posted with it).
    The transfer starts when the posting ends."""
    host_recv: float = 0.0
    """Seconds of host time before each receive of the stage (posting, unpacking); then it waits for
    the message, if it has not arrived."""

    warmup_forward: float = 0.0
    """Extra seconds of the stage's first F: a real run's first step allocates and initialises lazily
    (calibration fits it as the first step's excess over the mean)."""
    warmup_backward: float = 0.0
    """Extra seconds of the stage's first backward (B, or I where the backward is split)."""
    warmup_optimizer_step: float = 0.0
    """Extra seconds of the stage's first OPT (e.g. AdamW allocating its state)."""

    def __post_init__(self) -> None:
        for name in ("forward", "backward", "optimizer_step", *HOST_FIELDS, *WARMUP_FIELDS):
            _check_time(f"stage.{name}", getattr(self, name))
        if self.backward_weight is not None:
            _check_time("stage.backward_weight", self.backward_weight)
            if self.backward_weight > self.backward:
                raise CostError(
                    f"stage.backward_weight ({self.backward_weight}) exceeds stage.backward ({self.backward})"
                )
        for name in (*SIZE_FIELDS, "matrix_bytes"):
            if (getattr(self, name) or 0) < 0:
                raise CostError(f"stage.{name}: must be >= 0 bytes, got {getattr(self, name)}")
        if self.weight_input_bytes > self.stash_bytes:
            raise CostError(
                f"stage.weight_input_bytes ({self.weight_input_bytes}) exceeds "
                f"stage.stash_bytes ({self.stash_bytes})"
            )

    @property
    def weight_grad(self) -> float:
        """Seconds for W."""
        return self.backward / 2 if self.backward_weight is None else self.backward_weight

    @property
    def input_grad(self) -> float:
        """Seconds for I."""
        return self.backward - self.weight_grad

    @property
    def has_host_time(self) -> bool:
        return any(getattr(self, name) for name in HOST_FIELDS)

    @property
    def has_warmup(self) -> bool:
        return any(getattr(self, name) for name in WARMUP_FIELDS)


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Everything the simulator needs besides the schedule. Times in seconds, sizes in bytes."""

    stages: tuple[StageCost, ...] = (StageCost(),)
    """One entry per model stage, or a single entry that every stage uses."""
    latency: float = 0.0
    """Seconds a point-to-point transfer takes besides its bytes (per transfer)."""
    bandwidth: float = math.inf
    """Bytes per second of one point-to-point link (one direction; links are full duplex)."""
    overlap: bool = True
    """True: sends run on their own stream and overlap compute. False: a send blocks its rank."""
    overlap_f_b: float = DEFAULT_OVERLAP_F_B
    """An OVERLAP_F_B pair (a forward and a backward run together, DualPipe) takes the longer of the two
    plus this share of the shorter (0: hidden entirely, 1: none of it, the two back to back)."""
    link_jitter: tuple[float, ...] = ()
    """Factors on each transfer's time, drawn one per send, each equally likely (a measured run's spread
    of message times, mean about 1); empty: every transfer takes its nominal time."""
    optimizer: str = "adamw"
    """Optimizer whose state is held: adamw, nadamw, muon, sgd, rotation or none (OPTIMIZER_STATE)."""
    master_weights: bool = False
    """Mixed precision: weight_bytes are 16-bit weights; the optimizer keeps an fp32 master copy and
    fp32 state (AdamW: 6 x weight_bytes, 12 bytes per parameter) and gradients accumulate in fp32
    (a gradient buffer of 2 x weight_bytes): 18 bytes per parameter in all, as Megatron-LM's."""
    data_parallel: int = 1
    """Data-parallel replicas of the whole pipeline; > 1 adds a ring all-reduce of the gradient at OPT."""
    dp_latency: float = 0.0
    """Seconds per ring hop of the data-parallel all-reduce."""
    dp_bandwidth: float = math.inf
    """Bytes per second of a data-parallel link."""
    persistent_gradients: bool = False
    """True: each stage's gradient buffer is allocated once and held throughout (Megatron-LM's
    contiguous gradient buffer); False: from the first backward after an update until the update."""
    dp_overlap: bool = False
    """True: a stage's all-reduce starts with its last backward and OPT waits only for the part that
    the backward does not cover (PyTorch DDP); False: it runs after the backward, inside OPT."""
    jitter: str = "none"
    """Distribution of a per-action compute-time factor with mean 1: none, normal, lognormal, uniform,
    or empirical (drawn from jitter_factors)."""
    jitter_sigma: float = 0.0
    """Relative spread of the jitter (standard deviation; uniform: half-width)."""
    jitter_factors: tuple[float, ...] = ()
    """The factors an empirical jitter draws from, each equally likely (quantiles of a measured run's
    compute times over their means)."""
    seed: int = 0
    """Seed of the jitter: same seed, same trace."""
    stragglers: tuple[tuple[int, float], ...] = ()
    """(rank, slow-down factor) pairs: that rank's compute takes factor times longer."""
    microbatch_size: int = 1
    """Samples per microbatch (throughput in samples/s)."""
    sequence_length: int = 1
    """Tokens per sample (throughput in tokens/s)."""
    memory_capacity: int | None = None
    """Bytes of memory per device, if known (reported beside the peak)."""
    source: dict[str, Any] = field(default_factory=dict, compare=False)
    """Where the model came from (file, presets), recorded in the trace's meta."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise CostError("stages: at least one stage cost is needed")
        if not 0 <= self.overlap_f_b <= 1:
            raise CostError(f"overlap_f_b: must be between 0 and 1, got {self.overlap_f_b!r}")
        _check_time("latency", self.latency)
        _check_time("dp_latency", self.dp_latency)
        for name in ("bandwidth", "dp_bandwidth"):
            if not getattr(self, name) > 0:
                raise CostError(f"{name}: must be a positive number of bytes/s, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZER_STATE:
            known = ", ".join(OPTIMIZER_STATE)
            raise CostError(f"optimizer: unknown {self.optimizer!r} (known: {known})")
        if self.jitter not in (*JITTERS, EMPIRICAL):
            known = ", ".join((*JITTERS, EMPIRICAL))
            raise CostError(f"jitter: unknown distribution {self.jitter!r} (known: {known})")
        if (self.jitter == EMPIRICAL) != bool(self.jitter_factors):
            raise CostError("jitter: an empirical distribution needs its factors (and only it takes them)")
        for name in ("jitter_factors", "link_jitter"):
            if any(not (math.isfinite(x) and x >= 0) for x in getattr(self, name)):
                raise CostError(f"{name}: factors must be finite and >= 0")
        if self.jitter_sigma < 0 or (self.jitter == "uniform" and self.jitter_sigma >= 1):
            raise CostError(f"jitter_sigma: must be >= 0 (uniform: < 1), got {self.jitter_sigma}")
        if self.data_parallel < 1:
            raise CostError(f"data_parallel: must be at least 1, got {self.data_parallel}")
        for rank, factor in self.stragglers:
            if rank < 0 or not factor > 0:
                raise CostError(f"stragglers: rank {rank} factor {factor} (need rank >= 0, factor > 0)")
        if self.microbatch_size < 1 or self.sequence_length < 1:
            raise CostError("microbatch_size and sequence_length must be at least 1")

    @classmethod
    def uniform(cls, *, forward: float = 1.0, backward: float = 2.0, **kwargs: Any) -> CostModel:
        """Every stage the same; the rest of the fields as keywords."""
        stage_fields = {f.name for f in fields(StageCost)}
        stage = StageCost(
            forward=forward, backward=backward, **{k: v for k, v in kwargs.items() if k in stage_fields}
        )
        return cls(stages=(stage,), **{k: v for k, v in kwargs.items() if k not in stage_fields})

    def stage(self, model_stage: int) -> StageCost:
        """Cost entry of a model stage (the single entry if only one is given)."""
        return self.stages[0] if len(self.stages) == 1 else self.stages[model_stage]

    def check_stages(self, model_stages: int) -> None:
        """Raise CostError if the entries do not cover a model cut into `model_stages` stages."""
        if len(self.stages) not in (1, model_stages):
            where = f"{self.source['file']}: " if "file" in self.source else ""
            raise CostError(
                f"{where}cost model has {len(self.stages)} stages, the schedule needs {model_stages} "
                "(give every stage or one for all)"
            )

    def optimizer_state_bytes(self, entry: StageCost) -> int:
        """Bytes of optimizer state for one copy of a stage (see OPTIMIZER_STATE)."""
        weights = entry.weight_bytes
        matrices = weights if entry.matrix_bytes is None else min(entry.matrix_bytes, weights)
        if self.optimizer == "muon":
            return matrices + 2 * (weights - matrices)
        state = OPTIMIZER_STATE[self.optimizer] * weights
        if self.master_weights:  # fp32 master copy and fp32 state: twice the 16-bit bytes each
            state = 2 * (weights + state)
        return state + entry.rotation_bytes if self.optimizer == "basis-rotation" else state

    def straggler_factor(self, rank: int) -> float:
        return dict(self.stragglers).get(rank, 1.0)

    def transfer_time(self, nbytes: int) -> float:
        """Seconds one point-to-point transfer of nbytes holds its link (simulator/links.py)."""
        return transfer_time(nbytes, self.latency, self.bandwidth)

    def allreduce_time(self, nbytes: int) -> float:
        """Seconds of the ring all-reduce of nbytes over the data-parallel replicas (simulator/links.py)."""
        return ring_allreduce_time(nbytes, self.data_parallel, self.dp_latency, self.dp_bandwidth)

    def optimizer_sync_time(self, nbytes: int, backward: float) -> float:
        """Seconds the data-parallel all-reduce of nbytes adds to an OPT whose stage's last backward
        took `backward` seconds: all of it, or with dp_overlap what the backward did not hide."""
        reduce = self.allreduce_time(nbytes)
        return max(0.0, reduce - backward) if self.dp_overlap else reduce

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (infinite bandwidth as the string 'inf'), for trace meta. overlap_f_b
        appears only when it is not the default, so that traces written before it existed keep their
        bytes (traces/recorded/)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "overlap_f_b" and value == DEFAULT_OVERLAP_F_B:
                continue
            if f.name == "stages":
                value = [{g.name: getattr(stage, g.name) for g in fields(stage)} for stage in value]
            elif f.name == "stragglers":
                value = [list(pair) for pair in value]
            elif f.name in ("jitter_factors", "link_jitter"):
                value = list(value)
            elif isinstance(value, float) and math.isinf(value):
                value = "inf"
            out[f.name] = value
        return out

    def with_stages(self, **changes: Any) -> CostModel:
        """Apply the same StageCost changes to every stage entry."""
        return replace(self, stages=tuple(replace(stage, **changes) for stage in self.stages))

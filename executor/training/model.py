"""A GPT-style byte-level decoder, built whole from one seed and cut into pipeline stages by layers.

    from executor.training.model import PRESETS, build_stages, loss_fn
    stages = build_stages(PRESETS["tiny"], stages=2, seed=0)
    hidden = stages[0](tokens)            # int64 [batch, seq] -> float [batch, seq, hidden]
    logits = stages[1](hidden)            # -> float [batch, seq, vocab]
    loss = loss_fn(logits, targets)

The model: token embedding + learned position embedding, `layers` pre-norm blocks (LayerNorm, causal
self-attention, LayerNorm, 4x MLP with GELU), final LayerNorm, a head without weight tying (so no weight is
shared between stages). Stage 0 holds the embedding, the last stage the final norm and the head.

Note: the full model is always built (and initialised from `seed`) first and only then cut, so the weights
are the same whatever the number of stages, and parameter names are the full model's names:

    P = 1:  [embedding, blocks.0, blocks.1, blocks.2, blocks.3, head]
    P = 2:  [embedding, blocks.0, blocks.1] [blocks.2, blocks.3, head]      same tensors, same names

That is what makes a pipelined run comparable, bit for bit, with single-process training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from executor.errors import ExecutorConfigError
from schedules.workload import GPT_SHAPES, balanced_counts, split_problem


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """The size of the decoder."""

    vocab: int = 256
    """Vocabulary size, in tokens (256: one token per byte)."""
    seq_len: int = 64
    """Context length, in tokens; also the size of the learned position table."""
    layers: int = 4
    """Transformer blocks, a count."""
    hidden: int = 64
    """Width of the residual stream, in features."""
    heads: int = 4
    """Attention heads per block, a count; must divide `hidden`."""
    dropout: float = 0.0
    """Dropout probability, a fraction in [0, 1); 0 keeps runs deterministic."""

    def __post_init__(self) -> None:
        for field in ("vocab", "seq_len", "layers", "hidden", "heads"):
            if getattr(self, field) < 1:
                raise ExecutorConfigError(f"model: {field} must be at least 1, got {getattr(self, field)}")
        if self.hidden % self.heads:
            raise ExecutorConfigError(f"model: hidden {self.hidden} is not a multiple of heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ExecutorConfigError(f"model: dropout must be in [0, 1), got {self.dropout}")


PRESETS: dict[str, GPTConfig] = {
    name: GPTConfig(**dataclasses.asdict(shape)) for name, shape in GPT_SHAPES.items()
}
"""schedules.workload.GPT_SHAPES, the models the simulator's presets describe too."""


def model_config(name: str, **overrides: int | float) -> GPTConfig:
    """A preset by name, with some fields replaced (e.g. `layers=8`); unknown names are a user error."""
    if name not in PRESETS:
        raise ExecutorConfigError(f"unknown model {name!r}; choose from {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(GPTConfig)})
    if unknown:
        raise ExecutorConfigError(f"model: unknown setting {unknown[0]!r}")
    return dataclasses.replace(PRESETS[name], **overrides)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same outputs) whose weight gradient a split backward can defer.

    While `sink` is set (executor.interpreter.weightgrad.WeightGrads.recording, only for forwards that an
    I/W pair will differentiate), the forward goes through the sink; otherwise it is nn.Linear's own
    forward.
    """

    sink = None
    """The forward's WeightGrads while it records, else None (plain nn.Linear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sink is None:
            return super().forward(x)
        return self.sink.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    """Token + learned position embedding: int64 [batch, seq] -> float [batch, seq, hidden]."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(config.vocab, config.hidden)
        self.positions = nn.Embedding(config.seq_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.dropout(self.tokens(tokens) + self.positions(positions))


class Attention(nn.Module):
    """Causal multi-head self-attention through scaled_dot_product_attention."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = Linear(config.hidden, 3 * config.hidden)
        self.proj = Linear(config.hidden, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = (
            part.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)
            for part in self.qkv(x).split(hidden, dim=2)
        )
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        y = y.transpose(1, 2).reshape(batch, seq, hidden)
        return F.dropout(self.proj(y), dropout, self.training)


class MLP(nn.Module):
    """hidden -> 4 hidden -> GELU -> hidden."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = Linear(config.hidden, 4 * config.hidden)
        self.out = Linear(4 * config.hidden, config.hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.out(F.gelu(self.fc(x))))


class Block(nn.Module):
    """One pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(config.hidden)
        self.attention = Attention(config)
        self.norm_mlp = nn.LayerNorm(config.hidden)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm_attention(x))
        return x + self.mlp(self.norm_mlp(x))


class Head(nn.Module):
    """Final LayerNorm and the output projection to logits (no weight tying)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden)
        self.output = Linear(config.hidden, config.vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(x))


class Stage(nn.Module):
    """One pipeline stage: [embedding] + blocks `layers` + [head], with the full model's parameter names."""

    def __init__(
        self,
        *,
        stage: int,
        layers: range,
        embedding: Embedding | None,
        blocks: nn.ModuleDict,
        head: Head | None,
    ) -> None:
        super().__init__()
        self.stage = stage
        self.layers = layers
        self.embedding = embedding
        self.blocks = blocks
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids int64 [batch, seq] on the first stage, hidden states after; logits from the last."""
        if self.embedding is not None:
            x = self.embedding(x)
        for block in self.blocks.values():
            x = block(x)
        if self.head is not None:
            x = self.head(x)
        return x


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over every token: logits [batch, seq, vocab], targets int64 [batch, seq]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def is_hidden_matrix(name: str, parameter: torch.Tensor) -> bool:
    """A 2-D weight inside a block: what Muon and basis rotation treat (embeddings and head use AdamW)."""
    return parameter.ndim == 2 and not name.startswith(("embedding.", "head."))


def split_layers(layers: int, stages: int, split: Sequence[int] | None = None) -> list[range]:
    """The blocks of each stage, as ranges of global layer indices.

    `split` gives the layer count of every stage explicitly. Without it the split is balanced
    (schedules.workload.balanced_counts, the simulator's rule too): layers // stages blocks each, the
    remaining ones to the middle stages first, then to stage 0, then to the last stage.
    """
    if stages < 1:
        raise ExecutorConfigError(f"--stages must be at least 1, got {stages}")
    if stages > layers:
        raise ExecutorConfigError(f"--stages {stages} is more than the model's {layers} layers")
    counts = list(split) if split is not None else balanced_counts(layers, stages)
    problem = split_problem(layers, stages, counts)
    if problem is not None:
        raise ExecutorConfigError(f"--split {','.join(map(str, counts))} {problem}")
    starts = [sum(counts[:stage]) for stage in range(stages)]
    return [range(start, start + count) for start, count in zip(starts, counts, strict=True)]


def _build_parts(config: GPTConfig) -> nn.ModuleDict:
    """The whole model as a ModuleDict(embedding, blocks, head); parameters uninitialised."""
    blocks = nn.ModuleDict({str(layer): Block(config) for layer in range(config.layers)})
    return nn.ModuleDict({"embedding": Embedding(config), "blocks": blocks, "head": Head(config)})


def _initialise(parts: nn.ModuleDict, config: GPTConfig, seed: int) -> None:
    """GPT-2 initialisation from one generator, in parameter-name order (independent of the split)."""
    generator = torch.Generator().manual_seed(seed)
    residual_std = 0.02 / math.sqrt(2 * config.layers)
    with torch.no_grad():
        for name, parameter in parts.named_parameters():
            if name.endswith(".bias"):
                parameter.zero_()
            elif ".norm" in name:
                parameter.fill_(1.0)
            elif name.endswith(("attention.proj.weight", "mlp.out.weight")):
                parameter.normal_(0.0, residual_std, generator=generator)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)


def _cut(parts: nn.ModuleDict, ranges: list[range]) -> list[Stage]:
    last = len(ranges) - 1
    return [
        Stage(
            stage=stage,
            layers=layers,
            embedding=parts["embedding"] if stage == 0 else None,
            blocks=nn.ModuleDict({str(layer): parts["blocks"][str(layer)] for layer in layers}),
            head=parts["head"] if stage == last else None,
        )
        for stage, layers in enumerate(ranges)
    ]


def build_stages(
    config: GPTConfig, stages: int, split: Sequence[int] | None = None, seed: int = 0
) -> list[Stage]:
    """Build the full model on CPU from `seed`, then cut it into `stages` modules (see split_layers)."""
    ranges = split_layers(config.layers, stages, split)
    with torch.device("meta"):
        parts = _build_parts(config)
    parts = parts.to_empty(device="cpu")
    _initialise(parts, config, seed)
    return _cut(parts, ranges)


class Matrix(NamedTuple):
    """A 2-D weight: its full-model name, shape, and whether it is a hidden (block) matrix."""

    name: str
    rows: int
    cols: int
    hidden: bool


@dataclass(frozen=True, kw_only=True)
class StageShape:
    """What one stage holds, for the simulator's cost model and memory accounting."""

    stage: int
    """Stage index, 0-based."""
    layers: range
    """Global indices of the blocks on this stage."""
    parameters: int
    """Parameters on this stage, a count (times 4 bytes in float32)."""
    matrices: tuple[Matrix, ...]
    """Every 2-D weight on this stage, in parameter order."""


def stage_shapes(config: GPTConfig, stages: int, split: Sequence[int] | None = None) -> list[StageShape]:
    """The 2-D weight shapes and parameter counts of every stage, without allocating any weight."""
    with torch.device("meta"):
        cut = _cut(_build_parts(config), split_layers(config.layers, stages, split))
    return [
        StageShape(
            stage=module.stage,
            layers=module.layers,
            parameters=sum(parameter.numel() for parameter in module.parameters()),
            matrices=tuple(
                Matrix(name, *parameter.shape, is_hidden_matrix(name, parameter))
                for name, parameter in module.named_parameters()
                if parameter.ndim == 2
            ),
        )
        for module in cut
    ]


def activation_shape(config: GPTConfig, microbatch_size: int) -> tuple[int, int, int]:
    """Shape of the hidden states sent between stages for one microbatch: (batch, seq, hidden), float."""
    return (microbatch_size, config.seq_len, config.hidden)

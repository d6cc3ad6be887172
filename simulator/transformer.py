"""A GPT-style transformer at cluster scale: its shape, presets, and the work of one layer as a list of ops.

    from simulator.transformer import model_config, layer_ops
    model = model_config("gpt3-175b")                 # a preset, or the path of a TOML file
    ops = layer_ops(model, micro_batch=1, tp=8, sequence_parallel=True)
    sum(op.flops for op in ops)                       # forward FLOPs of one layer on one GPU

A TOML model file has the keys `layers`, `hidden`, `heads`, `vocab`, `seq_len` and optionally
`ffn_hidden` (default 4 x hidden) and `name`.

Note: one layer on one GPU of a tensor-parallel group of t, for b sequences of s tokens (T = b s,
h hidden, f ffn_hidden, a heads, d bytes per element). Counting as Megatron-LM does (Narayanan et al.
2021; a multiply-add is 2 FLOPs, attention counted in full, not causal-halved), so that the forward is
T (24 h^2 + 4 s h) / t FLOPs for f = 4h:

    gemm    qkv       2 T h 3h / t       scores  2 T s h / t   (batched, K = h/a)
            context   2 T s h / t        proj    2 T h h / t      fc1 2 T h f / t    fc2 2 T f h / t
    memory  layernorm x2, dropout+residual x2 (on T h, or T h / t with sequence parallelism),
            softmax and dropout of the scores (b a s^2 / t), bias+GeLU (T f / t)

A GEMM's backward is twice its forward (input and weight gradient; the batched attention GEMMs have
two input gradients instead); an element-wise op's backward moves about 1.5 times its bytes (it reads
the saved input and the incoming gradient and writes one gradient). The recompute modes decide which
forward ops run again in the backward: `none`; `selective` (Korthikanti et al. 2022: the attention
core, scores -> softmax -> dropout -> context); `full` (the whole layer, its collectives included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulator.units import CostError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

RECOMPUTE = ("none", "selective", "full")
"""Activation recompute modes."""
ATTENTION_CORE = frozenset({"scores", "softmax", "attention dropout", "context"})
"""The ops that selective recompute runs again (their stored outputs grow with s^2)."""
MODEL_KEYS = ("name", "layers", "hidden", "heads", "vocab", "seq_len", "ffn_hidden")


@dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """A GPT-style decoder: embedding, `layers` pre-norm blocks (attention + MLP), layernorm, head."""

    name: str
    """Preset name or file stem."""
    layers: int
    """Transformer blocks."""
    hidden: int
    """Width of the residual stream h."""
    heads: int
    """Attention heads a."""
    vocab: int
    """Vocabulary size V (tokens)."""
    seq_len: int
    """Tokens per sample s."""
    ffn_hidden: int = 0
    """Width of the MLP f; 0 = 4 x hidden."""

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "vocab", "seq_len"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CostError(f"model {self.name}: {key} must be a whole number >= 1, got {value!r}")
        if self.ffn_hidden < 0:
            raise CostError(f"model {self.name}: ffn_hidden must be >= 0, got {self.ffn_hidden}")
        if self.hidden % self.heads:
            raise CostError(
                f"model {self.name}: hidden {self.hidden} is not a multiple of heads {self.heads}"
            )

    @property
    def ffn(self) -> int:
        """f, the MLP width."""
        return self.ffn_hidden or 4 * self.hidden

    @property
    def layer_parameters(self) -> int:
        """Weights and biases of one block: qkv, proj, fc1, fc2 and two layernorms."""
        h, f = self.hidden, self.ffn
        return 4 * h * h + 2 * h * f + 3 * h + h + f + h + 4 * h

    @property
    def parameters(self) -> int:
        """All parameters: blocks, word and position embeddings (the head's weight is the word
        embedding's, tied), the final layernorm."""
        h = self.hidden
        return self.layers * self.layer_parameters + (self.vocab + self.seq_len) * h + 2 * h

    def model_flops(self, samples: int) -> float:
        """FLOPs of forward + backward over `samples` sequences without recompute, Megatron-LM's count
        72 B s l h^2 (1 + s/(6h) + V/(12 l h)) for f = 4h (the MLP term follows f otherwise)."""
        return 3 * self.forward_flops(samples)

    def forward_flops(self, samples: int) -> float:
        """FLOPs of one forward over `samples` sequences: the blocks and the head."""
        tokens = samples * self.seq_len
        h, s = self.hidden, self.seq_len
        block = tokens * (8 * h * h + 4 * h * self.ffn + 4 * s * h)
        return self.layers * block + 2 * tokens * h * self.vocab


def gpt3_175b() -> TransformerConfig:
    """GPT-3 175B (Brown et al. 2020, table 2.1) with Megatron's vocabulary (Korthikanti et al. 2022)."""
    return TransformerConfig(name="gpt3-175b", layers=96, hidden=12288, heads=96, vocab=51200, seq_len=2048)


def megatron_22b() -> TransformerConfig:
    """The 22B model of Korthikanti et al. 2022, table 3."""
    return TransformerConfig(name="megatron-22b", layers=48, hidden=6144, heads=64, vocab=51200, seq_len=2048)


def mt_nlg_530b() -> TransformerConfig:
    """Megatron-Turing NLG 530B (Smith et al. 2022), as in Korthikanti et al. 2022, table 3."""
    return TransformerConfig(
        name="mt-nlg-530b", layers=105, hidden=20480, heads=128, vocab=51200, seq_len=2048
    )


def megatron_1t() -> TransformerConfig:
    """The 1T model of Narayanan et al. 2021 (table 1) and Korthikanti et al. 2022 (table 3)."""
    return TransformerConfig(
        name="megatron-1t", layers=128, hidden=25600, heads=160, vocab=51200, seq_len=2048
    )


def gpt3_13b() -> TransformerConfig:
    """GPT-3 13B (Brown et al. 2020, table 2.1), a model a single node trains."""
    return TransformerConfig(name="gpt3-13b", layers=40, hidden=5120, heads=40, vocab=51200, seq_len=2048)


MODEL_PRESETS: dict[str, Callable[[], TransformerConfig]] = {
    "gpt3-13b": gpt3_13b,
    "megatron-22b": megatron_22b,
    "gpt3-175b": gpt3_175b,
    "mt-nlg-530b": mt_nlg_530b,
    "megatron-1t": megatron_1t,
}


def model_config(text: str) -> TransformerConfig:
    """A preset by name, or a TOML model file by path (CostError naming the problem otherwise). The
    small presets of simulator/presets.py are accepted too, with their own shapes."""
    if text in MODEL_PRESETS:
        return MODEL_PRESETS[text]()
    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        return load_model(path)
    from simulator.presets import MODELS

    if text in MODELS:
        small = MODELS[text]()
        return TransformerConfig(
            name=small.name,
            layers=small.layers,
            hidden=small.hidden,
            heads=small.heads,
            vocab=small.vocab,
            seq_len=small.seq_len,
        )
    known = ", ".join([*MODEL_PRESETS, *MODELS])
    raise CostError(f"--model: {text!r} is neither a preset ({known}) nor a TOML file")


def load_model(path: Path) -> TransformerConfig:
    """Read a TOML model file: layers, hidden, heads, vocab, seq_len (and optionally ffn_hidden, name)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CostError(f"--model {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CostError(f"--model {path}: not a readable TOML file ({error})") from None
    unknown = sorted(set(data) - set(MODEL_KEYS))
    if unknown:
        raise CostError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(MODEL_KEYS)})")
    missing = [key for key in MODEL_KEYS[1:6] if key not in data]
    if missing:
        raise CostError(f"{path}: missing key {missing[0]!r} (a model needs {', '.join(MODEL_KEYS[1:6])})")
    return TransformerConfig(**{"name": path.stem, **data})


@dataclass(frozen=True, kw_only=True)
class Op:
    """One kernel of a layer's forward on one GPU, for one microbatch."""

    name: str
    """What it is (qkv, softmax, ...)."""
    flops: float
    """FLOPs of the forward (0 for element-wise ops)."""
    bytes: float
    """Bytes the forward reads and writes in device memory."""
    gemms: int = 0
    """How many equal GEMMs `flops` is made of (a batched GEMM counts its batch): the efficiency
    curve is looked up at flops / gemms."""
    weighted: bool = False
    """True for a GEMM with a weight: its backward is an input gradient plus a weight gradient."""


def layer_ops(
    model: TransformerConfig, *, micro_batch: int, tp: int, sequence_parallel: bool, dtype_bytes: int = 2
) -> list[Op]:
    """The forward of one block on one GPU of a tensor-parallel group of `tp` (see the module note)."""
    b, s, h, f, a, d = micro_batch, model.seq_len, model.hidden, model.ffn, model.heads, dtype_bytes
    tokens = b * s
    sharded = tokens * h / (tp if sequence_parallel else 1)  # elements of a replicated T x h activation
    scores = b * a * s * s / tp  # elements of the attention score matrices on this GPU
    heads = b * a // tp if b * a >= tp else 1

    def gemm(name: str, n: int, k: int, weighted: bool = True) -> Op:  # (tokens x k) @ (k x n), n sharded
        moved = (tokens * k + k * n + tokens * n) * d
        return Op(name=name, flops=2 * tokens * k * n, bytes=moved, gemms=1, weighted=weighted)

    return [
        Op(name="layernorm 1", flops=0, bytes=2 * sharded * d),
        gemm("qkv", 3 * h // tp, h),
        Op(
            name="scores",
            flops=2 * tokens * s * h / tp,
            bytes=(2 * tokens * h / tp + scores) * d,
            gemms=heads,
        ),
        Op(name="softmax", flops=0, bytes=2 * scores * d),
        Op(name="attention dropout", flops=0, bytes=scores * (2 * d + 1)),
        Op(
            name="context",
            flops=2 * tokens * s * h / tp,
            bytes=(scores + 2 * tokens * h / tp) * d,
            gemms=heads,
        ),
        gemm("proj", h, h // tp),
        Op(name="dropout + residual 1", flops=0, bytes=sharded * (3 * d + 1)),
        Op(name="layernorm 2", flops=0, bytes=2 * sharded * d),
        gemm("fc1", f // tp, h),
        Op(name="bias + gelu", flops=0, bytes=2 * tokens * f / tp * d),
        gemm("fc2", h, f // tp),
        Op(name="dropout + residual 2", flops=0, bytes=sharded * (3 * d + 1)),
    ]


def head_ops(model: TransformerConfig, *, micro_batch: int, tp: int, sequence_parallel: bool) -> list[Op]:
    """The last stage's final layernorm, logits GEMM (vocabulary-parallel) and fp32 cross-entropy."""
    tokens, h, V = micro_batch * model.seq_len, model.hidden, model.vocab
    sharded = tokens * h / (tp if sequence_parallel else 1)
    logits = tokens * V / tp
    return [
        Op(name="final layernorm", flops=0, bytes=4 * sharded),
        Op(
            name="logits",
            flops=2 * tokens * h * V / tp,
            bytes=2 * (tokens * h + h * V / tp + logits),
            gemms=1,
        ),
        Op(name="cross entropy", flops=0, bytes=logits * (2 + 4 + 4)),  # read 16-bit, fp32 softmax
    ]


def recomputed(ops: list[Op], recompute: str) -> list[Op]:
    """The forward ops that run again in the backward under a recompute mode."""
    if recompute == "full":
        return list(ops)
    if recompute == "selective":
        return [op for op in ops if op.name in ATTENTION_CORE]
    return []


def activation_bytes_per_layer(
    model: TransformerConfig, *, micro_batch: int, tp: int, sequence_parallel: bool, recompute: str
) -> float:
    """Bytes one block keeps from its forward to its backward per microbatch on one GPU, in 16-bit
    (Korthikanti et al. 2022, table 2; the MLP terms scaled by f / 4h):

        none        s b h (10 + 24/t + 5 a s / (h t))        with sequence parallelism s b h / t (34 + 5as/h)
        selective   s b h (10 + 24/t)                       with sequence parallelism s b h / t x 34
        full        2 s b h (the block's input)             with sequence parallelism 2 s b h / t
    """
    s, b, h, a = model.seq_len, micro_batch, model.hidden, model.heads
    ratio = model.ffn / (4 * h)
    replicated = 10  # layernorm inputs (2 x 2), dropout masks (2 x 1), residual-branch inputs (2 x 2)
    split = 8 + 16 * ratio  # qkv/proj inputs and attention outputs (8), fc1/fc2 inputs and gelu (16)
    attention = 5 * a * s / h  # scores (2), softmax output (2), dropout mask (1), per element
    if recompute == "full":
        per_token = 2 / tp if sequence_parallel else 2
    elif sequence_parallel:
        per_token = (replicated + split + (0 if recompute == "selective" else attention)) / tp
    else:
        per_token = replicated + (split + (0 if recompute == "selective" else attention)) / tp
    return s * b * h * per_token


def head_activation_bytes(model: TransformerConfig, *, micro_batch: int, tp: int) -> float:
    """The last stage's output layer per microbatch: 4 s b h / t (1 + V / h) (Korthikanti et al. 2022:
    layernorm and logits inputs, fp32 logits for the cross-entropy)."""
    s, b, h = model.seq_len, micro_batch, model.hidden
    return 4 * s * b * h / tp * (1 + model.vocab / h)

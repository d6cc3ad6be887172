"""What the pipeline's stages hold: the GPT shapes both engines describe, and how layers are cut into stages.

    from schedules.workload import GPT_SHAPES, balanced_counts, split_problem
    GPT_SHAPES["tiny"]          # GPTShape(vocab=256, seq_len=64, layers=4, hidden=64, heads=4)
    balanced_counts(7, 4)       # [2, 2, 2, 1]
    split_problem(4, 2, [1, 2]) # "sums to 3, not 4"

The executor builds these models (executor/training/model.py) and the simulator's analytic model costs them
(simulator/presets.py, simulator/analytic.py): one table and one split rule, so that a prediction and
a run describe the same network, layer for layer. Standard library only, below both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GPTShape:
    """A GPT-style decoder: token and learned position embeddings, `layers` pre-norm blocks (attention and
    a 4x MLP), a final norm and an untied head."""

    vocab: int = 256
    """Vocabulary size, in tokens (256: one token per byte)."""
    seq_len: int
    """Context length, in tokens."""
    layers: int
    """Transformer blocks."""
    hidden: int
    """Width of the residual stream, in features."""
    heads: int
    """Attention heads per block; divides `hidden`."""


GPT_SHAPES: dict[str, GPTShape] = {
    # Trains on a 2-core CPU in seconds; the test and study workhorse.
    "tiny": GPTShape(seq_len=64, layers=4, hidden=64, heads=4),
    # About 6 M parameters: CPU in minutes, a GPU in seconds.
    "small": GPTShape(seq_len=256, layers=8, hidden=256, heads=8),
    # GPT-2 small's body (85 M parameters in blocks) on bytes.
    "gpt2-small": GPTShape(seq_len=1024, layers=12, hidden=768, heads=12),
    # GPT-2 medium's body (302 M parameters in blocks) on bytes: GPU only.
    "gpt2-medium": GPTShape(seq_len=1024, layers=24, hidden=1024, heads=16),
}
"""The models the executor trains, by preset name (the simulator's presets include them)."""


def balanced_counts(layers: int, pieces: int) -> list[int]:
    """Blocks per piece: layers // pieces each, the remainder to the middle pieces first (1, 2, ...,
    P-2), then to the first, then to the last. Why: with a byte vocabulary the embedding is a table
    look-up and the head one small matrix product plus the loss, so the ends are a little heavier than
    their block count says and take an extra block last. Needs 1 <= pieces <= layers."""
    counts = [layers // pieces] * pieces
    preference = [*range(1, pieces - 1), 0, pieces - 1] if pieces > 1 else [0]
    for piece in preference[: layers % pieces]:
        counts[piece] += 1
    return counts


def split_problem(layers: int, pieces: int, split: Sequence[int]) -> str | None:
    """What is wrong with an explicit split of `layers` blocks into `pieces` (words that follow the
    flag, e.g. "sums to 3, not 4"), or None when it is a valid one."""
    if len(split) != pieces:
        return f"gives {len(split)} stages, expected {pieces}"
    if any(count < 1 for count in split):
        return "every stage needs at least 1 layer"
    if sum(split) != layers:
        return f"sums to {sum(split)}, not {layers}"
    return None

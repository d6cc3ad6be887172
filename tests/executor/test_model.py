"""The GPT decoder and its cut into stages: chained stages are the unsplit model, exactly.

Run: .venv/bin/pytest tests/executor/test_model.py
"""

from __future__ import annotations

import pytest
import torch

from executor.errors import ExecutorConfigError
from executor.training.model import (
    PRESETS,
    GPTConfig,
    activation_shape,
    build_stages,
    loss_fn,
    model_config,
    split_layers,
    stage_shapes,
)
from schedules.errors import UserError

TINY = PRESETS["tiny"]


def _tokens(batch: int = 3, seq: int = TINY.seq_len, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY.vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _chain(stages, x):
    for stage in stages:
        x = stage(x)
    return x


@pytest.mark.parametrize(
    "stages, split",
    [
        (2, None),  # balanced halves
        (4, None),  # one block per stage: embedding and head alone with one block each
        (2, [1, 3]),  # an explicit, unbalanced split
        (3, None),  # an uneven balanced split (1, 2, 1)
    ],
)
def test_chained_stages_equal_the_unsplit_model_exactly(stages, split):
    (full,) = build_stages(TINY, 1, seed=3)
    parts = build_stages(TINY, stages, split, seed=3)
    tokens = _tokens()
    assert torch.equal(_chain(parts, tokens), full(tokens))


def test_stagewise_backward_gives_the_unsplit_gradients():
    # How a pipeline runs it: each stage's input detached, gradients handed back stage by stage.
    (full,) = build_stages(TINY, 1, seed=4)
    parts = build_stages(TINY, 2, seed=4)
    tokens, targets = _tokens(seed=5), _tokens(seed=6)
    loss_fn(full(tokens), targets).backward()
    hidden = parts[0](tokens)
    received = hidden.detach().requires_grad_()
    loss_fn(parts[1](received), targets).backward()
    hidden.backward(received.grad)
    split_grads = {name: p.grad for stage in parts for name, p in stage.named_parameters()}
    for name, parameter in full.named_parameters():
        assert torch.equal(split_grads[name], parameter.grad), name


def test_weights_are_identical_for_any_number_of_stages():
    reference = build_stages(TINY, 1, seed=7)[0].state_dict()
    for stages in (2, 4):
        merged = {}
        for stage in build_stages(TINY, stages, seed=7):
            merged.update(stage.state_dict())
        assert merged.keys() == reference.keys()
        assert all(torch.equal(merged[name], reference[name]) for name in reference)


def test_seed_decides_the_weights_and_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b, c = (build_stages(TINY, 1, seed=seed)[0] for seed in (1, 1, 2))
    assert torch.equal(torch.random.get_rng_state(), before)
    weight = "blocks.0.attention.qkv.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def test_stage_inputs_outputs_and_loss():
    parts = build_stages(TINY, 2, seed=0)
    tokens, targets = _tokens(batch=2), _tokens(batch=2, seed=9)
    hidden = parts[0](tokens)
    assert hidden.dtype == torch.float32
    assert tuple(hidden.shape) == activation_shape(TINY, 2)
    logits = parts[1](hidden)
    assert tuple(logits.shape) == (2, TINY.seq_len, TINY.vocab)
    picked = logits.log_softmax(-1).gather(-1, targets[..., None])
    torch.testing.assert_close(loss_fn(logits, targets), -picked.mean())
    assert parts[0].embedding is not None and parts[0].head is None
    assert parts[1].embedding is None and parts[1].head is not None


@pytest.mark.parametrize(
    "layers, stages, counts",
    [
        (4, 1, [4]),
        (4, 2, [2, 2]),
        (5, 3, [2, 2, 1]),  # extra block: middle first, then stage 0
        (7, 4, [2, 2, 2, 1]),  # the last stage (head + loss) is the last to take one
        (12, 5, [2, 3, 3, 2, 2]),
        (3, 2, [2, 1]),  # two stages: no middle, stage 0 before the last
    ],
)
def test_balanced_split(layers, stages, counts):
    ranges = split_layers(layers, stages)
    assert [len(r) for r in ranges] == counts
    assert [layer for r in ranges for layer in r] == list(range(layers))


def test_explicit_split():
    assert split_layers(6, 3, [1, 2, 3]) == [range(0, 1), range(1, 3), range(3, 6)]


@pytest.mark.parametrize(
    "layers, stages, split, words",
    [
        (4, 5, None, "more than the model's 4 layers"),
        (4, 0, None, "at least 1"),
        (4, 2, [1, 2, 1], "3 stages, expected 2"),
        (4, 2, [0, 4], "at least 1 layer"),
        (4, 2, [1, 2], "sums to 3, not 4"),
    ],
)
def test_bad_splits_are_one_line_user_errors(layers, stages, split, words):
    with pytest.raises(ExecutorConfigError, match=words) as caught:
        split_layers(layers, stages, split)
    assert isinstance(caught.value, UserError)
    assert "\n" not in str(caught.value)


def test_stage_shapes_match_the_built_stages():
    config = GPTConfig(seq_len=16, layers=3, hidden=32, heads=2)
    shapes = stage_shapes(config, 2)
    for shape, stage in zip(shapes, build_stages(config, 2), strict=True):
        assert shape.layers == stage.layers
        assert shape.parameters == sum(p.numel() for p in stage.parameters())
        built = {name: tuple(p.shape) for name, p in stage.named_parameters() if p.ndim == 2}
        assert {m.name: (m.rows, m.cols) for m in shape.matrices} == built
    hidden = {m.name for shape in shapes for m in shape.matrices if m.hidden}
    assert hidden == {
        f"blocks.{i}.{part}.weight"
        for i in range(3)
        for part in ("attention.qkv", "attention.proj", "mlp.fc", "mlp.out")
    }


def test_parameter_count_formula_for_gpt2_small():
    config = PRESETS["gpt2-small"]
    h, v, n = config.hidden, config.vocab, config.seq_len
    per_block = 12 * h * h + 13 * h
    expected = v * h + n * h + config.layers * per_block + 2 * h + h * v
    assert sum(shape.parameters for shape in stage_shapes(config, 4)) == expected
    assert (config.layers, config.hidden, config.heads, config.seq_len) == (12, 768, 12, 1024)


def test_config_errors_and_overrides():
    with pytest.raises(ExecutorConfigError, match="not a multiple of heads"):
        GPTConfig(hidden=30, heads=4)
    with pytest.raises(ExecutorConfigError, match="unknown model 'huge'"):
        model_config("huge")
    with pytest.raises(ExecutorConfigError, match="unknown setting 'width'"):
        model_config("tiny", width=3)
    assert model_config("tiny", layers=8).layers == 8
    assert {"tiny", "small", "gpt2-small"} <= PRESETS.keys()

"""The analytic cost model counts what torch counts: parameters of the modules, FLOPs of the kernels.

.venv/bin/pytest tests/simulator/test_analytic.py -q

A GPT block is written here with torch.nn (the executor's shapes: pre-norm, qkv + proj attention, 4x MLP,
biases) and measured with torch.utils.flop_counter, independently of simulator/analytic.py's formulas.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from executor.training.model import Block as ExecutorBlock
from executor.training.model import GPTConfig, loss_fn
from executor.training.model import Head as ExecutorHead
from simulator import CostError
from simulator.analytic import cost_model, split_layers, stage_work
from simulator.presets import DEVICES, MODELS, ModelSpec, device, model

SPEC = ModelSpec(name="test", layers=6, hidden=64, heads=4, seq_len=32, vocab=256, microbatch_size=2)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.norm_attention, self.norm_mlp = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.fc, self.out = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = (
            part.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)
            for part in self.qkv(self.norm_attention(x)).split(hidden, dim=2)
        )
        scores = torch.softmax(q @ k.transpose(-1, -2) / (hidden // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((scores @ v).transpose(1, 2).reshape(batch, seq, hidden))
        return x + self.out(nn.functional.gelu(self.fc(self.norm_mlp(x))))


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("layers", "stages", "counts"),
    [(10, 4, [2, 3, 3, 2]), (7, 4, [2, 2, 2, 1]), (6, 4, [1, 2, 2, 1]), (4, 4, [1, 1, 1, 1]), (5, 1, [5])],
)
def test_layers_split_like_the_executor(layers: int, stages: int, counts: list[int]) -> None:
    # layers // P each; the remainder to the middle stages first, then the first, then the last
    assert split_layers(layers, stages) == counts


def test_too_many_stages_is_a_user_error() -> None:
    with pytest.raises(CostError, match="--model has 4 layers, too few for 8 stages"):
        split_layers(4, 8)


def test_parameters_match_the_torch_modules() -> None:
    h, V, s = SPEC.hidden, SPEC.vocab, SPEC.seq_len
    block = parameters(Block(h, SPEC.heads))
    embedding = parameters(nn.Embedding(V, h)) + parameters(nn.Embedding(s, h))
    head = parameters(nn.LayerNorm(h)) + parameters(nn.Linear(h, V, bias=False))
    work = stage_work(SPEC, 3)  # 2 blocks per stage
    assert [w.parameters for w in work] == [embedding + 2 * block, 2 * block, 2 * block + head]
    assert work[1].matrix_parameters == 2 * 12 * h * h


def test_block_flops_match_torchs_flop_counter() -> None:
    torch.manual_seed(0)
    block = Block(SPEC.hidden, SPEC.heads)
    x = torch.randn(SPEC.microbatch_size, SPEC.seq_len, SPEC.hidden, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        y = block(x)
    with FlopCounterMode(display=False) as backward:
        y.sum().backward()
    middle = stage_work(SPEC, 6)[1]  # one block, no embedding or head
    assert middle.forward_flops == forward.get_total_flops()
    assert middle.input_grad_flops + middle.weight_grad_flops == backward.get_total_flops()


def test_head_flops_and_bytes() -> None:
    h, V, T = SPEC.hidden, SPEC.vocab, SPEC.microbatch_size * SPEC.seq_len
    first, last = stage_work(SPEC, 6)[0], stage_work(SPEC, 6)[5]
    assert last.forward_flops - first.forward_flops == 2 * T * h * V  # the head's matmul
    assert first.activation_bytes == T * h * 4  # fp32 boundary activation
    # Korthikanti et al.: T h (34 + 5 a s / h) bytes at 2-byte dtype, doubled for fp32, + token ids
    assert first.stash_bytes == int(T * h * (34 + 5 * 4 * 32 / 64) * 2) + 8 * T


def test_the_executors_stash_is_what_autograd_saves() -> None:
    """The executor's block (scaled_dot_product_attention, no dropout) and head with its loss: the bytes
    autograd keeps from one forward, weights excluded, are the analytic stash of each."""
    for batch, seq, hidden, heads in ((2, 32, 64, 4), (1, 128, 128, 8), (3, 16, 96, 2)):
        spec = ModelSpec(name="t", layers=6, hidden=hidden, heads=heads, seq_len=seq, vocab=256,
                         microbatch_size=batch, fused_attention=True)  # fmt: skip
        block = ExecutorBlock(GPTConfig(seq_len=seq, layers=1, hidden=hidden, heads=heads))
        weights = {p.untyped_storage().data_ptr() for p in block.parameters()}
        saved: dict[int, int] = {}

        def pack(tensor: torch.Tensor, saved: dict[int, int] = saved) -> torch.Tensor:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            block(torch.randn(batch, seq, hidden, requires_grad=True))
        measured = sum(size for pointer, size in saved.items() if pointer not in weights)
        middle = stage_work(spec, 6)[1]  # one block, no embedding or head
        assert middle.stash_bytes == measured, (batch, seq, hidden, heads)
        unfused = stage_work(ModelSpec(**{**vars(spec), "fused_attention": False}), 6)[1].stash_bytes
        assert unfused > measured  # Korthikanti et al.'s count keeps scores and masks
        head = ExecutorHead(GPTConfig(seq_len=seq, layers=1, hidden=hidden, heads=heads))
        weights = {p.untyped_storage().data_ptr() for p in head.parameters()}
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            x = torch.randn(batch, seq, hidden, requires_grad=True)
            loss_fn(head(x), torch.randint(0, 256, (batch, seq)))
        measured = sum(size for pointer, size in saved.items() if pointer not in weights)
        last = stage_work(spec, 6)[5]  # one block and the head
        assert last.stash_bytes - middle.stash_bytes == pytest.approx(measured, abs=8)  # + the loss scalar


def test_cost_model_times_are_flops_over_achieved_rate() -> None:
    gpu = device("h100-sxm")
    costs = cost_model(SPEC, gpu, stages=3, optimizer="sgd", data_parallel=2)
    work = stage_work(SPEC, 3)
    for stage, entry in zip(work, costs.stages, strict=True):
        assert entry.forward == pytest.approx(stage.forward_flops / (67e12 * 0.5))  # fp32: no tensor cores
        assert entry.weight_grad == pytest.approx(stage.weight_grad_flops / gpu.flops_at("fp32"))
        assert entry.input_grad == pytest.approx(stage.input_grad_flops / gpu.flops_at("fp32"))
        # SGD: read weights, gradient, momentum; write weights, momentum = 5 x weight bytes
        assert entry.optimizer_step == pytest.approx(5 * entry.weight_bytes / gpu.memory_bandwidth)
    half = cost_model(ModelSpec(**{**vars(SPEC), "dtype": "bf16"}), gpu, stages=3)
    assert half.stages[0].forward == pytest.approx(work[0].forward_flops / (989e12 * 0.5))
    assert (costs.latency, costs.bandwidth, costs.data_parallel) == (gpu.link_latency, gpu.link_bandwidth, 2)
    assert (costs.microbatch_size, costs.sequence_length) == (2, 32)


def test_every_preset_builds_a_cost_model() -> None:
    for name in MODELS:
        spec = model(name)
        for device_name in DEVICES:
            costs = cost_model(spec, device(device_name), stages=4)
            assert all(stage.forward > 0 and stage.weight_bytes > 0 for stage in costs.stages)
    with pytest.raises(CostError, match="--device: unknown preset 'tpu'"):
        device("tpu")

"""The cluster cost model: FLOPs, parameters and activation memory against the papers' closed forms,
collectives, the efficiency curve, and the costs a configuration gets.

    .venv/bin/pytest tests/simulator/test_cluster.py
"""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import pytest

from simulator.cluster import cluster_preset
from simulator.cluster_costs import cluster_costs, layer_times
from simulator.costs import CostModel, StageCost
from simulator.parallel import ParallelConfig, check_gpus
from simulator.transformer import (
    TransformerConfig,
    activation_bytes_per_layer,
    layer_ops,
    load_model,
    model_config,
)
from simulator.units import CostError

A100 = cluster_preset("dgx-a100-80gb")
GPT3 = model_config("gpt3-175b")


def megatron_model_flops(B: int, l: int, h: int, s: int, V: int) -> float:
    """Narayanan et al. 2021: 72 B s l h^2 (1 + s/6h + V/12lh), without recompute."""
    return 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h))


@pytest.mark.parametrize("name", ["megatron-22b", "gpt3-175b", "mt-nlg-530b", "megatron-1t"])
def test_model_flops_are_megatrons_72_coefficient_formula(name: str) -> None:
    model = model_config(name)
    expected = megatron_model_flops(1536, model.layers, model.hidden, model.seq_len, model.vocab)
    assert model.model_flops(1536) == pytest.approx(expected, rel=1e-12)


def test_parameters_follow_the_papers_count() -> None:
    # 12 l h^2 (1 + 13/12h + (V+s)/12lh): 175B, 530B, 1T as the papers name them (plus a final layernorm)
    for name, billions in (("gpt3-175b", 175), ("mt-nlg-530b", 530), ("megatron-1t", 1008)):
        model = model_config(name)
        l, h, V, s = model.layers, model.hidden, model.vocab, model.seq_len
        closed = 12 * l * h * h * (1 + 13 / (12 * h) + (V + s) / (12 * l * h))
        assert model.parameters == pytest.approx(closed + 2 * h, rel=1e-12)
        assert model.parameters / 1e9 == pytest.approx(billions, rel=0.01)


@pytest.mark.parametrize("tp,sequence_parallel", [(1, False), (8, False), (8, True)])
def test_one_layers_forward_is_24h2_plus_4sh_per_token(tp: int, sequence_parallel: bool) -> None:
    model = GPT3
    ops = layer_ops(model, micro_batch=2, tp=tp, sequence_parallel=sequence_parallel)
    tokens, h, s = 2 * model.seq_len, model.hidden, model.seq_len
    assert sum(op.flops for op in ops) == pytest.approx(tokens * (24 * h * h + 4 * s * h) / tp)
    weighted = [op.name for op in ops if op.weighted]
    assert weighted == ["qkv", "proj", "fc1", "fc2"]


def test_activation_memory_is_korthikantis_table_2() -> None:
    model, s, b = GPT3, GPT3.seq_len, 1
    h, a, t = model.hidden, model.heads, 8
    sbh = s * b * h

    def per_layer(tp: int, sp: bool, recompute: str) -> float:
        return activation_bytes_per_layer(
            model, micro_batch=b, tp=tp, sequence_parallel=sp, recompute=recompute
        )

    assert per_layer(1, False, "none") == pytest.approx(sbh * (34 + 5 * a * s / h))
    assert per_layer(t, False, "none") == pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    assert per_layer(t, True, "none") == pytest.approx(sbh / t * (34 + 5 * a * s / h))
    assert per_layer(t, False, "selective") == pytest.approx(sbh * (10 + 24 / t))
    assert per_layer(t, True, "selective") == pytest.approx(sbh / t * 34)
    assert per_layer(t, False, "full") == pytest.approx(2 * sbh)


def test_collectives_ride_nvlink_in_a_node_and_every_nic_across_nodes() -> None:
    nbytes = 100e6
    inside = A100.collective_time("all_reduce", nbytes=nbytes, group=8, per_node=8)
    nvlink = A100.intra_bandwidth * A100.intra_efficiency
    assert inside == pytest.approx(2 * 7 / 8 * nbytes / nvlink + 14 * A100.intra_latency)
    assert A100.collective_time("all_gather", nbytes=nbytes, group=8, per_node=8) == pytest.approx(
        7 / 8 * nbytes / nvlink + 7 * A100.intra_latency
    )
    one_rail = A100.collective_time("all_reduce", nbytes=nbytes, group=16, per_node=1)
    four_rails = A100.collective_time("all_reduce", nbytes=nbytes, group=16, per_node=4)
    network = A100.inter_bandwidth * A100.inter_efficiency
    assert one_rail == pytest.approx(2 * 15 / 16 * nbytes / network + 30 * A100.inter_latency)
    assert four_rails < one_rail / 3  # four NICs of a node carry four rings side by side
    assert A100.collective_time("all_reduce", nbytes=nbytes, group=1, per_node=1) == 0


def test_the_gemm_efficiency_curve_interpolates_in_log_flops_and_is_flat_beyond_its_ends() -> None:
    (x0, y0), (x1, y1) = A100.gemm_efficiency[1], A100.gemm_efficiency[2]
    assert A100.efficiency(math.sqrt(x0 * x1)) == pytest.approx((y0 + y1) / 2)
    assert A100.efficiency(1.0) == A100.gemm_efficiency[0][1]
    assert A100.efficiency(1e18) == A100.gemm_efficiency[-1][1]
    sizes = [10**k for k in range(6, 15)]
    assert all(A100.efficiency(a) <= A100.efficiency(b) for a, b in pairwise(sizes))
    with pytest.raises(CostError, match="fp8"):
        A100.peak("fp8")
    assert cluster_preset("dgx-h100").peak("fp8") == pytest.approx(
        2 * cluster_preset("dgx-h100").peak("bf16"), rel=1e-3
    )


def test_recompute_modes_order_the_backward_and_sequence_parallelism_adds_the_gathers_again() -> None:
    base = ParallelConfig(tp=8, pp=1, dp=1, micro_batch=1, global_batch=1, dtype="fp16")
    times = {
        mode: layer_times(GPT3, A100, replace(base, recompute=mode)) for mode in ("none", "selective", "full")
    }
    assert times["none"].recompute == 0 < times["selective"].recompute < times["full"].recompute
    assert times["full"].recompute == pytest.approx(times["full"].forward + times["full"].forward_comm)
    sp = layer_times(GPT3, A100, replace(base, sequence_parallel=True))
    gather = A100.collective_time("all_gather", nbytes=2048 * GPT3.hidden * 2, group=8, per_node=8)
    assert sp.backward_comm == pytest.approx(sp.forward_comm + 2 * gather)
    assert sp.forward < times["none"].forward  # layernorm and dropout on 1/t of the tokens


def test_a_configuration_gets_one_cost_entry_per_rank_with_megatrons_sizes() -> None:
    parallel = ParallelConfig(tp=8, pp=8, dp=4, micro_batch=1, global_batch=64, schedule="1f1b")
    built = cluster_costs(GPT3, A100, parallel)
    costs = built.costs
    assert len(costs.stages) == 8 and built.layers_per_rank == (12,) * 8
    middle = costs.stages[3]
    assert middle.weight_bytes == 12 * GPT3.layer_parameters // 8 * 2
    assert costs.optimizer_state_bytes(middle) == 6 * middle.weight_bytes  # fp32 master, m and v
    assert middle.activation_bytes == 2048 * GPT3.hidden * 2 // 8
    assert costs.stages[-1].forward > middle.forward  # the head and the loss
    assert costs.data_parallel == 4 and costs.master_weights and costs.persistent_gradients
    assert costs.bandwidth == A100.inter_bandwidth * A100.inter_efficiency  # a stage is a node
    assert costs.dp_bandwidth == A100.inter_bandwidth * A100.inter_efficiency  # one GPU per node per ring
    unfused = cluster_costs(GPT3, A100, replace(parallel, grad_accumulation_fusion=False)).costs.stages[3]
    assert unfused.backward_weight > middle.backward_weight


def test_overlapped_data_parallel_all_reduce_waits_only_for_what_the_backward_does_not_hide() -> None:
    costs = CostModel(stages=(StageCost(),), data_parallel=8, dp_bandwidth=1e9, dp_latency=0.0)
    whole = costs.allreduce_time(10**9)
    assert whole == pytest.approx(2 * 7 / 8)
    assert costs.optimizer_sync_time(10**9, backward=0.5) == whole
    overlapped = replace(costs, dp_overlap=True)
    assert overlapped.optimizer_sync_time(10**9, backward=0.5) == pytest.approx(whole - 0.5)
    assert overlapped.optimizer_sync_time(10**9, backward=5.0) == 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"tp": 7}, "does not divide the model's 96 attention heads"),
        ({"pp": 97}, "more than the model's 96 layers"),
        ({"global_batch": 1000}, "not divisible by dp x micro-batch"),
        ({"recompute": "some"}, "unknown 'some'"),
        ({"sequence_parallel": True, "tp": 1}, "needs --tp > 1"),
    ],
)
def test_configurations_that_cannot_exist_are_refused(changes: dict, message: str) -> None:
    parallel = replace(ParallelConfig(tp=8, pp=8, dp=12, global_batch=1536), **changes)
    with pytest.raises(CostError, match=message):
        cluster_costs(GPT3, A100, parallel)
    with pytest.raises(CostError, match="is not tp x pp x dp"):
        check_gpus(ParallelConfig(tp=8, pp=8, dp=12, global_batch=1536), 1024)


def test_a_model_file_needs_its_keys(tmp_path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("layers = 4\nhidden = 256\nheads = 8\nvocab = 1000\nseq_len = 128\nffn_hidden = 512\n")
    model = load_model(path)
    assert model == TransformerConfig(
        name="m", layers=4, hidden=256, heads=8, vocab=1000, seq_len=128, ffn_hidden=512
    )
    path.write_text("layers = 4\nhidden = 256\nheads = 8\nvocab = 1000\n")
    with pytest.raises(CostError, match="missing key 'seq_len'"):
        load_model(path)
    path.write_text("layers = 4\nhidden = 256\nheads = 8\nvocab = 1000\nseq_len = 1\nwidth = 3\n")
    with pytest.raises(CostError, match="unknown key 'width'"):
        load_model(path)
    with pytest.raises(CostError, match="neither a preset"):
        model_config("gpt-9")


def test_mixed_precision_holds_18_bytes_per_parameter_from_the_start() -> None:
    from schedules import build
    from simulator.simulation import simulate

    weights = 2 * 10**6  # a million 16-bit parameters per stage
    costs = CostModel.uniform(weight_bytes=weights, master_weights=True, persistent_gradients=True)
    peaks = simulate(build("1f1b", ranks=2, microbatches=2), costs).metrics().peak_memory
    assert peaks == [9 * weights, 9 * weights]  # 2 + 4 (fp32 gradients) + 12 (master, m, v) bytes
    transient = simulate(build("1f1b", ranks=2, microbatches=2), replace(costs, persistent_gradients=False))
    assert transient.memory[0][0] == 7 * weights  # no gradient buffer before the first backward


def test_cost_files_keep_the_cluster_fields(tmp_path) -> None:
    from simulator.costfile import dumps_costs, loads_costs

    built = cluster_costs(GPT3, A100, ParallelConfig(tp=8, pp=4, dp=2, global_batch=8, dp_overlap=True))
    again = loads_costs(dumps_costs(built.costs), source="x")
    assert again.master_weights and again.persistent_gradients and again.dp_overlap
    assert again.stages == built.costs.stages and again.dp_bandwidth == built.costs.dp_bandwidth

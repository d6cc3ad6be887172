"""`pipesim simulate --cluster` and `pipesim plan`: the outputs, the errors, every schedule at scale, and
the search on a published configuration.

    .venv/bin/pytest tests/simulator/test_cluster_cli.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipesim.cli import main
from simulator.cluster import cluster_preset
from simulator.cluster_run import predict
from simulator.parallel import ParallelConfig
from simulator.planner import SearchSpace, configurations, search, why_slower
from simulator.transformer import TransformerConfig, model_config
from traces.io import read_trace

CLUSTER = ["--model", "gpt3-175b", "--cluster", "dgx-a100-80gb"]
SMALL = [*CLUSTER, "--tp", "8", "--pp", "8", "--dp", "2", "--global-batch", "64"]
"""175B on 128 GPUs, m = 32 per replica: a cluster-scale case that simulates in a fraction of a second."""


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["simulate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_json_has_the_issues_keys_and_they_agree(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(
        [*SMALL, "--schedule", "interleaved", "--recompute", "selective", "--sequence-parallel"], capsys
    )
    for key in (
        "iteration_time",
        "tflops_per_gpu",
        "hardware_tflops_per_gpu",
        "mfu",
        "memory_per_gpu",
        "fits",
    ):
        assert key in out
    assert out["parallel"]["chunks"] == 2 and out["parallel"]["microbatches"] == 32 and out["gpus"] == 128
    model_flops = model_config("gpt3-175b").model_flops(64)
    assert out["tflops_per_gpu"] == pytest.approx(model_flops / (128 * out["iteration_time"]) / 1e12)
    assert out["mfu"] == pytest.approx(out["tflops_per_gpu"] * 1e12 / 312e12)
    assert out["tflops_per_gpu"] < out["hardware_tflops_per_gpu"] < 1.02 * out["tflops_per_gpu"]
    assert out["fits"] is True and 0 < out["memory_per_gpu"] < 80 * 2**30
    assert sum(out["memory_parts"].values()) == out["memory_per_gpu"]
    assert out["iteration_time"] == out["metrics"]["step_time"]


def test_full_recompute_counts_megatrons_96_coefficient_hardware_flops() -> None:
    model = model_config("gpt3-175b")
    parallel = ParallelConfig(tp=8, pp=8, dp=1, global_batch=16, recompute="full", dtype="fp16")
    prediction = predict(model, cluster_preset("dgx-a100-80gb"), parallel)
    B, s, l, h, V = 16, model.seq_len, model.layers, model.hidden, model.vocab
    expected = 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))
    assert prediction.hardware_flops == pytest.approx(expected, rel=1e-12)


def test_every_schedule_runs_at_scale_and_the_async_ones_keep_their_staleness(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = "gpipe,1f1b,interleaved,zb-h1,pipedream,2bw,amdp"
    results = run_json(
        [*SMALL, "--schedule", names, "--recompute", "selective", "--sequence-parallel"], capsys
    )
    by_name = {result["parallel"]["schedule"]: result for result in results}
    assert list(by_name) == names.split(",")
    assert (
        max(by_name["2bw"]["metrics"]["weight_versions"]) == 2
        and max(by_name["2bw"]["metrics"]["delay"]) == 1
    )
    assert max(by_name["pipedream"]["metrics"]["delay"]) == 7
    assert by_name["2bw"]["iteration_time"] < by_name["1f1b"]["iteration_time"]  # no flush, no bubble
    assert by_name["interleaved"]["iteration_time"] < by_name["1f1b"]["iteration_time"]
    assert by_name["gpipe"]["memory_per_gpu"] > by_name["1f1b"]["memory_per_gpu"]  # all m in flight


def test_a_configuration_too_big_for_the_gpu_is_reported_and_warned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", *SMALL, "--schedule", "gpipe", "--recompute", "none", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["fits"] is False and out["memory_per_gpu"] > 80 * 2**30
    assert "it would not fit" in captured.err
    assert (
        run_json([*SMALL, "--schedule", "1f1b", "--recompute", "full", "--memory-limit", "1GB"], capsys)[
            "fits"
        ]
        is False
    )


def test_the_text_report_and_the_trace_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    args = [*SMALL, "--schedule", "1f1b", "--trace", str(trace), "--chrome", str(tmp_path / "c.json")]
    assert main(["simulate", *args]) == 0
    out = capsys.readouterr().out
    for words in ("iteration time", "model TFLOP/s per GPU", "MFU", "memory per GPU", "bubble fraction"):
        assert words in out
    meta = read_trace(trace).meta
    assert meta["cluster"]["cluster"] == "dgx-a100-80gb" and meta["cost_model"]["master_weights"] is True
    assert (tmp_path / "c.json").exists()
    assert main(["simulate", *SMALL, "--schedule", "1f1b,2bw"]) == 0
    assert "2bw" in capsys.readouterr().out.splitlines()[2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tp", "5"], "--tp 5 does not divide"),
        (["--pp", "97"], "more than the model's 96 layers"),
        (["--gpus", "100"], "--gpus 100 is not tp x pp x dp"),
        (["--global-batch", "63"], "not divisible by dp x micro-batch"),
        (["--dtype", "fp8"], "no fp8 tensor cores"),
        (["-m", "5"], "-m 5 disagrees"),
        (["--costs", "x.toml"], "drop --costs"),
    ],
)
def test_impossible_configurations_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *SMALL, "--schedule", "1f1b", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cluster_flags_need_the_cluster_and_the_old_paths_still_need_p_and_m(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--schedule", "1f1b", "-p", "4", "-m", "8", "--tp", "2"]) == 2
    assert "--tp: only with --cluster" in capsys.readouterr().err
    assert main(["simulate", "--schedule", "1f1b", "-p", "4"]) == 2
    assert "required: -p/--stages, -m/--microbatches" in capsys.readouterr().err
    assert main(["simulate", "--schedule", "1f1b", "--cluster", "dgx-a100-80gb", "--global-batch", "8"]) == 2
    assert "--cluster needs --model" in capsys.readouterr().err


def test_shape_flags_and_model_files_work_with_the_cluster(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    small = [*CLUSTER, "--tp", "8", "--pp", "2", "--global-batch", "8", "--schedule", "1f1b"]
    deep = run_json([*small, "--layers", "8"], capsys)
    shallow = run_json([*small, "--layers", "4"], capsys)
    assert deep["iteration_time"] > 1.8 * shallow["iteration_time"]
    model = tmp_path / "mine.toml"
    model.write_text("layers = 8\nhidden = 1024\nheads = 16\nvocab = 32000\nseq_len = 1024\n")
    out = run_json(["--model", str(model), "--cluster", "dgx-h100", "--tp", "2", "--global-batch", "8",
                    "--schedule", "1f1b", "--dtype", "fp8"], capsys)  # fmt: skip
    assert out["model"] == "mine" and out["mfu"] * 1978.9e12 == pytest.approx(out["tflops_per_gpu"] * 1e12)


# --- the search ------------------------------------------------------------------------------------

SC21_145B = TransformerConfig(name="145.6B", layers=80, hidden=12288, heads=96, vocab=51200, seq_len=2048)
"""Narayanan et al. 2021, table 1: 145.6B on 1536 GPUs, global batch 2304, published as tp 8, pp 8,
micro-batch 2, interleaved with 2 chunks, full recompute, fp16 (148 TFLOP/s per GPU)."""


def test_the_search_space_holds_only_configurations_that_can_exist() -> None:
    space = SearchSpace(gpus=1536, global_batch=2304, schedules=("1f1b", "interleaved", "2bw", "amdp"))
    found = configurations(SC21_145B, cluster_preset("dgx-a100-80gb"), space)
    assert found and all(p.gpus == 1536 and 2304 % (p.dp * p.micro_batch) == 0 for p in found)
    assert all(SC21_145B.heads % p.tp == 0 and SC21_145B.layers % (p.pp * p.chunks) == 0 for p in found)
    assert all(p.microbatches % p.pp == 0 for p in found if p.schedule in ("interleaved", "amdp"))
    assert all(p.microbatches >= p.pp for p in found if p.schedule == "2bw")
    assert all(p.sequence_parallel == (p.tp > 1) for p in found)


def test_the_search_finds_the_published_sc21_configuration_good() -> None:
    cluster = cluster_preset("dgx-a100-80gb")
    space = SearchSpace(
        gpus=1536, global_batch=2304, tps=(4, 8), micro_batches=(1, 2), schedules=("1f1b", "interleaved"),
        recomputes=("full",), dtype="fp16",
    )  # fmt: skip
    result = search(SC21_145B, cluster, space, candidates=16)
    published = ParallelConfig(tp=8, pp=8, dp=24, micro_batch=2, global_batch=2304, schedule="interleaved",
                               chunks=2, recompute="full", sequence_parallel=True, dtype="fp16")  # fmt: skip
    labels = [summary["label"] for summary in result.ranked]
    assert published.label() in labels[:3]  # among the best few of everything that fits
    best = result.ranked[0]
    assert predict(SC21_145B, cluster, published).iteration_time <= 1.02 * best["iteration_time"]
    assert all(s["memory_per_gpu"] <= 75 * 2**30 for s in result.ranked)  # 80 GiB less the reserve
    assert why_slower(best, result.ranked[1]).startswith(result.ranked[1]["label"])


def test_plan_prints_the_best_and_why_the_runner_up_loses(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--model", "gpt3-13b", "--cluster", "dgx-a100-80gb", "--gpus", "64",
            "--global-batch", "128", "--schedules", "1f1b,interleaved", "--candidates", "6", "--top", "3",
            "--jobs", "1"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "why the runner-up loses" in captured.out and captured.out.count("tp ") >= 4
    assert "plan [" in captured.err  # the progress bar
    assert main([*args, "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)["ranked"]
    assert len(ranked) == 3 and ranked[0]["iteration_time"] <= ranked[1]["iteration_time"]
    assert main(["plan", *CLUSTER, "--gpus", "7", "--global-batch", "8"]) == 2
    assert "no configuration of 7 GPUs" in capsys.readouterr().err
    assert main(["plan", *CLUSTER, "--gpus", "8", "--global-batch", "8", "--recompute", "half"]) == 2

"""The benchmarks' arithmetic: the executor's share of the ideal improvement and the ideal it prints; the
published tables read with their configurations, and their errors; the scale fit and plot.

.venv/bin/pytest tests/test_benchmarks.py
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_executor", ROOT / "benchmarks" / "bench_executor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rank_logs(root: Path, stderr: dict[int, str]) -> Path:
    """A torchrun --log-dir tree: <run>/attempt_0/<rank>/stdout.log and stderr.log."""
    for rank, text in stderr.items():
        folder = root / "none_abc" / "attempt_0" / str(rank)
        folder.mkdir(parents=True)
        (folder / "stdout.log").write_text(f"table of rank {rank}\n")
        (folder / "stderr.log").write_text(text)
    return root


def test_a_failed_executor_benchmark_shows_each_ranks_last_words_and_keeps_them(tmp_path, capsys) -> None:
    bench = _bench()
    crashed = "".join(f"line {i}\n" for i in range(100)) + "Fatal Python error: Aborted\n"
    logs = _rank_logs(tmp_path / "failed", {0: "", 1: crashed})
    assert bench.report_ranks(logs, 1) == 1
    out, err = capsys.readouterr()
    assert out == "table of rank 0\n"  # rank 0's table, as printed
    assert "Fatal Python error: Aborted" in err and "line 71\n" in err and "line 70\n" not in err  # 30 lines
    assert str(logs) in err.splitlines()[-1] and logs.is_dir()  # kept, and said where
    fine = _rank_logs(tmp_path / "fine", {0: "", 1: ""})
    assert bench.report_ranks(fine, 0) == 0
    assert capsys.readouterr().out == "table of rank 0\n" and not fine.exists()  # nothing left behind


def test_a_ranks_span_splits_into_compute_waiting_and_host_time() -> None:
    bench = _bench()
    events = [  # rank 0 of a 2-stage 1F1B: compute, a send, a wait, compute, an update
        ("0F0@s0v0", 0.0, 1.0),
        ("0SEND_F0@s0", 1.25, 1.5),
        ("0RECV_B0@s0", 1.5, 3.5),
        ("0B0@s0v0", 3.5, 5.5),
        ("0OPT@s0v0", 6.0, 6.5),
    ]
    compute, waiting, host = bench.split_span(events)
    assert (compute, waiting) == pytest.approx((3.5, 2.0))
    assert host == pytest.approx(1.0)  # the send and the gaps: 6.5 - 3.5 - 2.0
    assert bench.split_span([]) == (0.0, 0.0, 0.0)


def test_the_share_of_the_ideal_improvement_is_zero_without_gain() -> None:
    bench = _bench()
    ideal = bench.ideal_gain(8, 2, 8)
    assert ideal == pytest.approx(72 / 65)  # 8 steps of m = 8, P = 2: the README's 1.108
    assert bench.improvement_share(1.0, ideal) == 0  # gain / ideal would say 90%
    assert bench.improvement_share(ideal, ideal) == pytest.approx(1)
    assert bench.improvement_share(1.123, ideal) == pytest.approx(1.142, abs=1e-3)
    assert bench.ideal_gain(8, 2, 10**6) == pytest.approx(9 / 8, rel=1e-5)


def test_the_table_prints_the_ideal_it_uses(capsys) -> None:
    bench = _bench()
    args = argparse.Namespace(stages=2, microbatches=8, microbatch_size=8, seq_len=128, layers=4, hidden=128)
    args.steps, args.rounds = 8, 3
    median = {("ours", "gpipe"): 0.5, ("torch", "gpipe"): 0.5, ("ours", "1f1b"): 0.54, ("torch", "1f1b"): 0.5}
    median["ours", "2bw"] = 0.54 / 1.054  # half of the ideal improvement
    bench.print_table(args, median)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ours 2bw"))
    assert "gain over 1F1B 1.054; ideal over 8 steps S(m+P-1)/(Sm+P-1) = 1.108" in line
    assert "50% of the ideal improvement" in line


def _published():
    spec = importlib.util.spec_from_file_location(
        "bench_published", ROOT / "benchmarks" / "bench_published.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _scale_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_simulator_scale", ROOT / "benchmarks" / "bench_simulator_scale.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_published_tables_are_read_with_their_configurations() -> None:
    bench = _published()
    sc21, k22 = bench.sc21_rows(), bench.k22_rows()
    assert len(sc21) == 10 and len(k22) == 8
    largest = sc21[-1].parallel
    assert (largest.tp, largest.pp, largest.dp, largest.microbatches) == (8, 64, 6, 512)
    assert [row.parallel.dp_overlap for row in sc21] == [True] * 4 + [False] * 6  # --DDP-impl torch/local
    assert {row.parallel.recompute for row in k22} == {"full", "selective"}
    assert all(row.parallel.sequence_parallel == (row.parallel.recompute == "selective") for row in k22)
    assert bench.error(k22[0], 1.1 * k22[0].measured) == pytest.approx(-10)
    assert bench.error(sc21[0], 1.1 * sc21[0].measured) == pytest.approx(10)


def test_the_22b_rows_are_predicted_within_the_goal() -> None:
    bench = _published()
    for row in bench.k22_rows()[:2]:  # one node, one microbatch: a fraction of a second each
        assert abs(bench.error(row, bench.predicted_value(row))) < bench.GOALS["korthikanti_max"]


def test_the_scale_benchmark_fits_the_exponent_of_time_against_actions() -> None:
    bench = _scale_bench()
    linear = [(n, 2e-6 * n) for n in (1e6, 2e6, 4e6, 8e6)]
    assert bench.slope(linear) == pytest.approx(1.0)
    assert bench.slope([(n, 1e-12 * n * n) for n in (1e6, 2e6, 4e6)]) == pytest.approx(2.0)
    plot = bench.loglog(linear).splitlines()
    assert plot[0].endswith("*") and plot[-3].split("|")[1].startswith("*")  # corners: top right, bottom left


def test_the_accuracy_table_takes_each_cases_median_over_rounds() -> None:
    bench = _accuracy_bench()
    rows = [
        {"configuration": case, "kind": "calibrated", "step_error": error, "util_error": 0.01}
        for case, error in (("a", 0.02), ("a", -0.05), ("a", 0.01), ("b", -0.03), ("b", 0.07), ("b", -0.04))
    ]
    rows += [  # what-ifs carry the drift-adjusted error (None: another P, no drift to take out)
        {
            "configuration": "c",
            "kind": "what-if",
            "step_error": error,
            "util_error": 0.0,
            "adjusted_error": adjusted,
        }
        for error, adjusted in ((0.10, 0.01), (-0.08, -0.03), (0.12, None))
    ]
    text = bench.medians(rows)
    assert "| a | calibrated | +1.0% | -5.0% to +2.0% | +1.0 pts | - | - |" in text
    assert "| b | calibrated | -3.0% | -4.0% to +7.0% |" in text
    assert "| c | what-if | +10.0% | -8.0% to +12.0% | +0.0 pts | -1.0% | -3.0% to +1.0% |" in text
    assert "| calibrated | 2 | 2.0% | 3.0% | - | - |" in text
    assert "| what-if | 1 | 10.0% | 10.0% | 1.0% | 1.0% |" in text


def test_the_accuracy_drift_is_the_target_runs_compute_time_over_the_source_runs(tmp_path: Path) -> None:
    bench = _accuracy_bench()
    cases = (("a", 1.0, 2, 10), ("b", 1.25, 2, 3), ("c", 1.0, 4, 10))
    source, target, other = (_compute_trace(tmp_path / name, *rest) for name, *rest in cases)
    assert bench.drift(source, target) == pytest.approx(1.25)
    assert bench.drift(target, source) == pytest.approx(0.8)
    assert bench.drift(source, other) is None  # another P: its ranks hold other stages
    row = bench.with_drift({"step_predicted": 0.1, "step_measured": 0.125}, source, target)
    assert row["drift"] == pytest.approx(1.25) and row["adjusted_error"] == pytest.approx(0.0)


def _accuracy_bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "benchmarks" / "bench_accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _compute_trace(folder: Path, factor: float, ranks: int, warm: float) -> Path:
    """A run folder whose trace is a 1F1B simulation with every duration x factor, and step 0's x warm
    more (the warm-up, which the drift leaves out)."""
    from dataclasses import replace

    from schedules import build
    from simulator import CostModel, simulate
    from traces.io import write_trace

    trace = simulate(build("1f1b", ranks=ranks, microbatches=4, steps=3), CostModel.uniform()).trace()
    events = tuple(
        replace(
            e,
            start=e.start * factor,
            end=e.start * factor + e.duration * factor * (warm if e.action.step == 0 else 1),
        )
        for e in trace.events
    )
    folder.mkdir()
    write_trace(folder / "trace.json", replace(trace, events=events))
    return folder


@pytest.mark.slow
def test_the_gpu_benchmark_runs_its_tables_on_a_cpu(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--device", "cpu", "--model", "tiny", "--stages", "2", "--microbatches", "2", "--steps", "3"]
    assert bench.main([*argv, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "gpu.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 1 | ")]
    assert [row.split(" | ")[1] for row in rows[:3]] == ["F", "B", "OPT"]  # stage 1's fitted costs
    assert "TFLOP/s" in text and "| fp32 | " in text and "tf32" not in text  # no TF32 on a CPU
    measured, preset, ratio = rows[3].split(" | ")[1:]  # rank 1's peak memory
    assert float(ratio.strip(" |")) == pytest.approx(
        float(preset.split()[0]) / float(measured.split()[0]), 0.02
    )

"""Outputs a reader can decode: defined words, capacity as given, memory warnings, honest throughput.

.venv/bin/pytest tests/pipesim/test_readout.py
"""

from __future__ import annotations

import pytest

from pipesim.cli import main
from pipesim.commands.readout import capacity, legend, memory_notes, throughput


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (80 * 10**9, "80 GB (74.51 GiB)"),  # the case: an 80 GB H100 read as 74.51 GiB
        (23 * 2**30, "23 GiB"),  # given in binary units: shown so
        (1536 * 10**6, "1536 MB (1.431 GiB)"),
        (3 * 2**29, "1.5 GiB"),
    ],
)
def test_capacity_is_shown_in_the_unit_it_was_given(value, text) -> None:
    assert capacity(value) == text


def test_a_peak_above_the_device_is_a_warning() -> None:
    assert memory_notes([10 * 2**30, 90 * 10**9], 80 * 10**9) == [
        "warning: predicted peak memory 83.82 GiB (rank 1) exceeds the 80 GB (74.51 GiB) of one device: "
        "it would not fit"
    ]
    assert memory_notes([10 * 2**30, None], 80 * 10**9) == []
    assert memory_notes([10 * 2**30], None) == []


def test_throughput_says_why_when_the_costs_have_no_workload() -> None:
    assert throughput(2.0, 2048.0, 2, 1024) == "2 samples/s, 2048 tokens/s"
    assert throughput(2.0, 2.0, 2, 1).startswith("2 samples/s (no sequence length")
    assert throughput(2.0, 2.0, 1, 1).startswith("2 microbatches/s (no workload in these costs")


def test_schedules_show_defines_bubble_fraction_and_ratio_and_fractional_activations(capsys) -> None:
    out = run(capsys, "schedules", "show", "interleaved", "-p", "4", "-m", "8", "--chunks", "2")
    assert "bubble ratio     0.1875" in out  # (P-1)/(v m)
    assert "\nbubble fraction: idle share of the P ranks over one step" in out
    assert "\nbubble ratio: idle over compute time in one step, fraction / (1 - fraction)" in out
    assert "a chunk is 1/2 of a stage, so a microbatch there counts 1/2" in out
    assert "a chunk is" not in run(capsys, "schedules", "show", "1f1b", "-p", "4", "-m", "8")


def test_unit_costs_say_memory_and_workload_are_not_modelled(capsys) -> None:
    out = run(capsys, "simulate", "--schedule", "1f1b", "-p", "4", "-m", "8")
    assert "0 B" not in out
    assert out.split("peak memory", 1)[1].split("\n")[0].split() == ["-"] * 4
    assert "peak memory: not modelled, these costs give no sizes" in out
    assert "microbatches/s (no workload in these costs" in out and "tokens/s" not in out.split("\n\n")[1]
    assert "bubble fraction: idle share" in out


def test_the_demo_prediction_warns_that_gpipe_does_not_fit_an_h100(capsys) -> None:
    argv = ["simulate", "--schedule", "gpipe,1f1b", "-p", "8", "-m", "128", "--model", "gpt2-small"]
    out = run(capsys, *argv, "--device", "h100-sxm")
    assert "memory per device: 80 GB (74.51 GiB)" in out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: gpipe: predicted peak memory 96.31 GiB")
    one = run(
        capsys,
        "simulate",
        "--schedule",
        "gpipe",
        "-p",
        "8",
        "-m",
        "128",
        "--model",
        "gpt2-small",
        "--device",
        "h100-sxm",
    )
    assert "memory per device  80 GB (74.51 GiB)" in one and "exceeds the 80 GB" in one


def test_the_legend_names_every_word_it_is_asked_for() -> None:
    assert "bubble ratio" not in legend() and "bubble ratio" in legend(ratio=True)
    assert "peak activations" not in legend(activations=False)

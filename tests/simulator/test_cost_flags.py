"""Cost flags never silently do nothing or mix units: derived times, message sizes, jitter defaults.

.venv/bin/pytest tests/simulator/test_cost_flags.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipesim.cli import main
from simulator.costfile import costs_from_dict, with_overrides
from simulator.costs import DEFAULT_JITTER_SIGMA, CostModel
from simulator.request import complete_times
from simulator.units import CostError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "simulator" / "presets" / "example.toml")
ONE_F_ONE_B = ["simulate", "--schedule", "1f1b", "-p", "4", "-m", "8"]  # (m + P - 1)(t_F + t_B) per step


def simulate(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[dict, str]:
    assert main([*ONE_F_ONE_B, *flags, "--json"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


@pytest.mark.parametrize(
    ("flags", "note"),
    [
        (["--tf", "2ms"], "t_B = 2 x t_F = 4ms"),  # the case: it used to keep t_B = 2 s (22 s a step)
        (["--tb", "4ms"], "t_F = t_B / 2 = 2ms"),
        (["--tf", "0.002"], "t_B = 2 x t_F = 0.004"),  # a bare number is seconds: the same unit again
    ],
)
def test_one_time_alone_derives_the_other_in_its_unit(capsys, flags, note) -> None:
    metrics, err = simulate(capsys, *flags)
    assert metrics["step_time"] == pytest.approx(11 * 6e-3)  # 11 x (2 ms + 4 ms)
    assert note in err and err.startswith("pipesim: note: ")


def test_both_times_or_a_cost_file_derive_nothing(capsys) -> None:
    metrics, err = simulate(capsys, "--tf", "2ms", "--tb", "6ms")
    assert metrics["step_time"] == pytest.approx(11 * 8e-3) and err == ""
    # The file's own backward stays (2.4 ms, stage 3: 3 ms): the note is for unit costs only.
    assert main([*ONE_F_ONE_B, "--costs", EXAMPLE, "--tf", "1ms", "--json"]) == 0
    assert "note" not in capsys.readouterr().err
    overrides, notes = complete_times({"forward": "3 us", "latency": "1us"})
    assert overrides == {"forward": "3 us", "latency": "1us", "backward": "6 us"} and len(notes) == 1


def test_bandwidth_over_empty_messages_warns_and_activation_bytes_gives_them_a_size(capsys) -> None:
    base, _ = simulate(capsys, "--tf", "2ms", "--tb", "4ms")
    same, err = simulate(capsys, "--tf", "2ms", "--tb", "4ms", "--bandwidth", "25GB/s")
    assert same["step_time"] == base["step_time"]
    assert "warning: --bandwidth 25GB/s changes nothing: every point-to-point message is 0 bytes" in err
    sized, err = simulate(
        capsys, "--tf", "2ms", "--tb", "4ms", "--bandwidth", "25GB/s", "--activation-bytes", "16MiB"
    )
    assert err == ""
    # 16 MiB at 25 GB/s is 0.67 ms a transfer; 1F1B's critical path crosses links 2(P-1) = 6 times.
    assert sized["step_time"] >= base["step_time"] + 6 * 16 * 2**20 / 25e9 - 1e-12


def test_activation_bytes_is_checked_like_every_size(capsys) -> None:
    assert main([*ONE_F_ONE_B, "--activation-bytes", "16 GBs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--activation-bytes" in err


def test_jitter_without_sigma_uses_the_stated_default(capsys) -> None:
    plain, _ = simulate(capsys)
    jittered, err = simulate(capsys, "--jitter", "lognormal", "--seed", "3")
    assert err == "" and jittered["step_time"] != plain["step_time"]
    costs = with_overrides(CostModel.uniform(), jitter="normal")
    assert costs.jitter_sigma == DEFAULT_JITTER_SIGMA == 0.05
    # A source's own sigma stays; a file with a distribution and no sigma gets the default too.
    assert (
        with_overrides(CostModel.uniform(jitter="uniform", jitter_sigma=0.2), jitter="normal").jitter_sigma
        == 0.2
    )
    assert costs_from_dict({"jitter": {"distribution": "normal"}}).jitter_sigma == DEFAULT_JITTER_SIGMA


def test_a_sigma_without_a_distribution_is_refused(capsys) -> None:
    assert main([*ONE_F_ONE_B, "--jitter-sigma", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jitter-sigma 0.1: no jitter distribution" in err
    with pytest.raises(CostError, match=r"jitter\.sigma: no jitter\.distribution"):
        costs_from_dict({"jitter": {"sigma": 0.1}})
    off = costs_from_dict({"jitter": {"distribution": "none", "sigma": 0.1}})  # written out: off, as dumped
    assert (off.jitter, off.jitter_sigma) == ("none", 0.1)


def test_schedule_and_schedules_are_one_flag_on_both_commands(capsys, tmp_path) -> None:
    assert main(["simulate", "--schedules", "gpipe,2bw", "-p", "2", "-m", "2", "--json"]) == 0
    assert [entry["schedule"] for entry in json.loads(capsys.readouterr().out)] == ["gpipe", "2bw"]
    out = tmp_path / "sweep.csv"
    assert main(["sweep", "--schedule", "1f1b", "-p", "2", "-m", "2", "--out", str(out), "--jobs", "1"]) == 0
    assert out.read_text().count("\n") == 2  # header + one point

"""Flags agree across commands: `pipesim run` takes -p/-m like the rest, and every optimizer setting that
an error message names is a flag.

    .venv/bin/pytest tests/pipesim/test_cli_flags.py
"""

from __future__ import annotations

import pytest

from pipesim.cli import build_parser, main
from pipesim.commands.run import given, make_config


def config(*flags: str):
    return make_config(given(build_parser().parse_args(["run", *flags])))


@pytest.mark.parametrize(
    "flags",
    [
        ["-p", "3", "-m", "6"],  # as schedules, simulate and sweep spell them
        ["--ranks", "3", "--microbatches", "6"],
        ["--stages", "3", "--microbatches", "6"],  # the old spelling still works
    ],
)
def test_run_takes_p_and_m_like_every_other_command(flags) -> None:
    run_config = config(*flags)
    assert (run_config.stages, run_config.microbatches) == (3, 6)
    assert run_config.out == "runs/1f1b-p3-m6"


def test_optimizer_settings_are_flags() -> None:
    optimizer = config(
        "--optimizer", "basis-rotation", "--rotation-sides", "one", "--rotation-every", "5",
        "--rotation-beta", "0.9", "--betas", "0.8,0.99", "--eps", "1e-6", "--min-lr-ratio", "0.2",
        "--momentum", "0.5", "--muon-momentum", "0.9", "--pipemare-steps", "7", "--delay-lambda", "0.25",
    ).optimizer  # fmt: skip
    assert (optimizer.name, optimizer.rotation_sides, optimizer.rotation_every) == (
        "basis-rotation",
        "one",
        5,
    )
    assert (optimizer.rotation_beta, optimizer.betas, optimizer.eps) == (0.9, (0.8, 0.99), 1e-6)
    assert (optimizer.min_lr_ratio, optimizer.momentum, optimizer.muon_momentum) == (0.2, 0.5, 0.9)
    assert (optimizer.pipemare_steps, optimizer.delay_lambda) == (7, 0.25)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rotation-sides", "three"], "--rotation-sides: unknown 'three'; choose from both, one"),
        (["--betas", "0.9,x"], "argument --betas: expected comma-separated numbers, got '0.9,x'"),
        (["--betas", "0.9"], "--betas takes two values"),
        (["-p", "two"], "argument -p/--ranks/--stages: invalid int value: 'two'"),
    ],
)
def test_bad_optimizer_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message) -> None:
    assert main(["run", *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipesim: error: ") and err.count("\n") == 1 and message in err, err


def test_run_help_explains_what_a_pipedream_step_is(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "pipedream once per microbatch (m updates per step)" in text


def test_demo_help_lists_every_section(capsys) -> None:
    from pipesim.commands.demo import SECTIONS

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"in {len(SECTIONS)} sections" in text
    for section in SECTIONS:
        assert section.title in text

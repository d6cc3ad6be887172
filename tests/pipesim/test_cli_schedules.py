"""`pipesim schedules ...` and `pipesim demo`, in-process through pipesim.cli.main (two subprocess checks).

.venv/bin/pytest tests/pipesim/test_cli_schedules.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipesim.cli import main
from pipesim.commands.schedules import use_color
from schedules import SCHEDULES, build
from schedules.csv_io import export_csv

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def show_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code, out, err = run(capsys, "schedules", "show", *argv, "--format", "json")
    assert code == 0 and err == ""
    return json.loads(out)


def test_list_names_every_schedule_with_kind_and_constraints(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schedules", "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(SCHEDULES)
    assert " async " in rows["pipedream"] and " sync " in rows["1f1b"]
    assert "m >= P" in rows["2bw"] and "P even" in rows["amdp"] and "m % P == 0" in rows["interleaved"]
    assert "m >= 2P" in rows["dualpipev"] and "OVERLAP_F_B pairs" in rows["dualpipev"]


def test_the_list_covers_every_schedule_pytorch_ships(capsys: pytest.CaptureFixture[str]) -> None:
    """Every class torch.distributed.pipelining's get_schedule_class knows, bar the two base classes,
    is the PyTorch's column of a schedule pipesim generates (tests/schedules/test_pytorch_orders.py
    checks their orders), and PipeDream, 2BW and AMDP, which PyTorch does not ship, are there too."""
    import inspect

    from torch.distributed.pipelining import schedules

    source = inspect.getsource(schedules.get_schedule_class)
    shipped = {name for name in dir(schedules) if name.startswith("Schedule") and f": {name}," in source}
    assert {"ScheduleGPipe", "ScheduleDualPipeV", "ScheduleZBVZeroBubble"} <= shipped
    code, out, _ = run(capsys, "schedules", "list")
    assert code == 0
    listed = {cell for line in out.splitlines()[1:] for cell in line.split() if cell.startswith("Schedule")}
    assert shipped <= listed
    assert {"pipedream", "2bw", "amdp"} <= {line.split()[0] for line in out.splitlines()[1:]}


def test_show_text_draws_the_grid_then_the_analytics(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "schedules", "show", "1f1b", "-p", "4", "-m", "8")
    assert code == 0 and err == ""
    assert out.index("rank 3  ") < out.index("bubble fraction")
    assert "\x1b[" not in out  # captured stdout is not a terminal
    assert "makespan         33" in out and "bubble fraction  0.2727" in out
    peak = next(line for line in out.splitlines() if line.startswith("peak activations"))
    assert peak.split()[2:] == ["4", "3", "2", "1"]
    _, colored, _ = run(capsys, "schedules", "show", "1f1b", "-p", "2", "-m", "2", "--color", "always")
    assert "\x1b[" in colored


def test_color_auto_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color("auto") and not use_color("never")
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color("auto") and use_color("always")


def test_show_json_matches_the_spec_spot_values(capsys: pytest.CaptureFixture[str]) -> None:
    gpipe = show_json(capsys, "gpipe", "-p", "4", "-m", "8")
    required = {"schedule", "stages", "microbatches", "makespan", "bubble_fraction"}
    assert required | {"peak_activations", "weight_versions", "delay", "steps", "utilization"} <= set(gpipe)
    assert (gpipe["schedule"], gpipe["stages"], gpipe["microbatches"]) == ("gpipe", 4, 8)
    assert gpipe["makespan"] == 33 and gpipe["bubble_fraction"] == pytest.approx(3 / 11)
    one_f_one_b = show_json(capsys, "1f1b", "-p", "8", "-m", "16")
    assert one_f_one_b["peak_activations"] == [8, 7, 6, 5, 4, 3, 2, 1] and one_f_one_b["steps"] == 1
    pipedream = show_json(capsys, "pipedream", "-p", "8", "-m", "16")
    assert pipedream["delay"] == [7, 6, 5, 4, 3, 2, 1, 0] and pipedream["weight_versions"] == list(
        range(8, 0, -1)
    )
    assert pipedream["steps"] == 4  # asynchronous default
    assert show_json(capsys, "pipedream", "-p", "2", "-m", "2", "--steps", "2")["steps"] == 2
    interleaved = show_json(capsys, "interleaved", "-p", "4", "-m", "8")
    assert (interleaved["chunks"], interleaved["stages"]) == (2, 8)
    assert max(interleaved["peak_activations_per_rank"]) == 5.5
    slow_backward = show_json(capsys, "1f1b", "-p", "2", "-m", "2", "--tf", "1", "--tb", "4")
    assert slow_backward["makespan"] == (2 + 2 - 1) * 5


def test_show_help_states_the_default_steps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["schedules", "show", "--help"])
    assert exit_.value.code == 0
    assert "4 for asynchronous" in " ".join(capsys.readouterr().out.split())


def test_show_csv_prints_pytorch_csv_and_warns_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "schedules", "show", "1f1b", "-p", "4", "-m", "8", "--format", "csv")
    assert code == 0 and err == "" and out == export_csv(build("1f1b", 4, 8)).text
    code, out, err = run(
        capsys, "schedules", "show", "2bw", "-p", "4", "-m", "4", "--format", "csv", "--comms"
    )
    assert code == 0 and "1RECV_F0" in out and out.count("\n") == 4
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(line.startswith("pipesim: warning: ") for line in warnings)
    assert "optimizer steps and weight versions" in err


def test_export_then_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "zb.csv"
    code, out, err = run(capsys, "schedules", "export", "zb-h1", "-p", "4", "-m", "8", "-o", str(path))
    assert code == 0 and err == "" and out.startswith(f"wrote {path}")
    assert path.read_text() == export_csv(build("zb-h1", 4, 8)).text
    code, out, err = run(capsys, "schedules", "import", str(path), "--format", "json")
    assert code == 0 and err == ""
    imported = json.loads(out)
    assert (
        imported["schedule"] == "csv"
        and imported["makespan"] == show_json(capsys, "zb-h1", "-p", "4", "-m", "8")["makespan"]
    )
    old = tmp_path / "old.csv"
    old.write_text("0F0,0F1,0B0,0W0,0B1,0W1\n1F0,1B0,1W0,1F1,1B1,1W1\n")
    code, out, _ = run(capsys, "schedules", "import", str(old), "--color", "never")
    assert code == 0 and "rank 1  " in out and "I0" in out and "W1" in out


def test_export_warns_for_async_schedules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pd.csv"
    code, _, err = run(capsys, "schedules", "export", "pipedream", "-p", "4", "-m", "8", "-o", str(path))
    assert code == 0 and "asynchronous" in err and "covers 4 steps" in err
    assert path.read_text().count("\n") == 4


def _bad_csv(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return str(path)


# (argv, what the one error line must say): every bad input the issue lists, and a few more
BAD_INPUT = [
    (["schedules", "show", "nope", "-p", "4", "-m", "8"], "unknown schedule 'nope'"),
    (["schedules", "show", "1f1b", "-p", "0", "-m", "8"], "stages P must be at least 1, got 0"),
    (["schedules", "show", "1f1b", "-p", "4", "-m", "0"], "microbatches m must be at least 1, got 0"),
    (["schedules", "show", "2bw", "-p", "4", "-m", "2"], "m >= stages P, got m = 2 < P = 4"),
    (
        ["schedules", "show", "interleaved", "-p", "4", "-m", "6"],
        "interleaved needs microbatches m to be a multiple",
    ),
    (["schedules", "show", "amdp", "-p", "3", "-m", "6"], "amdp needs an even number of stages P, got P = 3"),
    (
        ["schedules", "show", "1f1b", "-p", "four", "-m", "8"],
        "argument -p/--ranks/--stages: invalid int value: 'four'",
    ),
    (
        ["schedules", "show", "1f1b", "-p", "4", "-m", "8", "--tf", "-1"],
        "argument --tf: must be a finite number",
    ),
    (["schedules", "show", "gpipe", "-p", "4", "-m", "8", "--chunks", "2"], "gpipe takes no chunks"),
    (["schedules", "show", "1f1b", "-p", "4", "-m", "8", "--steps", "0"], "steps must be at least 1"),
    (
        ["schedules", "export", "1f1b", "-p", "4", "-m", "8"],
        "the following arguments are required: -o/--output",
    ),
    (["schedules", "import", "{tmp}/missing.csv"], "cannot read schedule CSV"),
    (
        ["schedules", "import", "{bad}", "0F0,0F1\n1F0,1Y1\n"],
        "bad.csv: row 2, cell 2: malformed action '1Y1'",
    ),
    (
        ["schedules", "import", "{bad}", "0F0,0I0,0W0\n", "--notation", "old"],
        "'I' is the new notation's input",
    ),
    (["schedules", "import", "{bad}", "0F0,0B0\n", "--notation", "newest"], "invalid choice: 'newest'"),
    (["schedules"], "the following arguments are required"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    if "{bad}" in argv:  # the CSV's text follows the placeholder
        at = argv.index("{bad}")
        argv = [*argv[:at], _bad_csv(tmp_path, argv[at + 1]), *argv[at + 2 :]]
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("pipesim: error: ") and "Traceback" not in err
    assert message in err


def test_an_invalid_imported_schedule_shows_the_grid_with_the_bad_cell_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "schedules", "import", _bad_csv(tmp_path, "1F0,0F0\n"))
    assert code == 2 and out == ""
    headline, header, row = err.splitlines()
    assert (
        headline.startswith("pipesim: error: ") and "bad.csv: invalid schedule: missing backward" in headline
    )
    assert header.split() == ["0", "1"]
    assert row.split() == ["rank", "0", "1F0@v0", ">>0F0@v0<<"]  # the action the headline names
    code, _, err = run(capsys, "schedules", "import", _bad_csv(tmp_path, "0F0,0F1,0B0,0B1\n1F0,1B0\n"))
    assert code == 2 and "missing forward 1F1" in err.splitlines()[0]
    assert [line.split()[:2] for line in err.splitlines()[2:]] == [["rank", "0"], ["rank", "1"]]


def test_demo_prints_every_schedule_side_by_side() -> None:
    from pipesim.commands.demo import side_by_side

    out = side_by_side()
    first, second = out.split("P = 8, m = 32")
    assert "P = 4, m = 8" in first
    for name in SCHEDULES:
        assert f"\n{name} " in first and f"\n{name} " in second
    rows = {
        line.split()[0]: line.split() for line in second.splitlines() if line and line.split()[0] in SCHEDULES
    }
    assert rows["1f1b"][1:4] == ["117", "0.179", "8..1"]
    assert rows["pipedream"][1:3] == ["96", "0.000"] and "7..0" in rows["pipedream"]
    assert rows["2bw"][-4:-1] == ["2", "x", "8"] or "2 x 8" in " ".join(rows["2bw"])


def test_demo_predicted_section_simulates_every_schedule() -> None:
    from pipesim.commands.demo_sections import PREDICT_SCHEDULES, predicted

    out = predicted()
    header = next(line for line in out.splitlines() if line.split()[:1] == ["gpipe"])
    assert tuple(header.split()) == PREDICT_SCHEDULES
    delay = next(line for line in out.splitlines() if line.startswith("delay (max)")).split()[2:]
    assert delay == ["0", "0", "0", "0", "7", "1", "0"]  # pipedream P-1, 2bw 1; amdp 0 (docs/amdp.md)


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_runs_every_section_with_real_ranks(capsys, monkeypatch) -> None:
    from pipesim.commands import demo_sections

    monkeypatch.setattr(demo_sections, "MEASURE_STEPS", 3)  # the demo's own 16 steps take ~35 s
    code, out, err = run(capsys, "demo")
    assert code == 0 and err == ""
    for title in ("exact analytics", "Predicted:", "Measured:"):
        assert title in out
    measured = out.split("Measured:")[1]
    rows = {line.split()[0]: line.split() for line in measured.splitlines() if line[:4] in ("1f1b", "2bw ")}
    # 2BW's first step runs at the initial weights, like 1F1B's: the same first loss, to the digit.
    assert rows["1f1b"][1] == rows["2bw"][1]
    assert float(rows["2bw"][2]) < float(rows["2bw"][1])


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_python_m_pipesim_2bw_json_has_delay_1_and_2_versions() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipesim",
            "schedules",
            "show",
            "2bw",
            "-p",
            "8",
            "-m",
            "16",
            "--format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["delay"] == [1] * 8 and data["weight_versions"] == [2] * 8


def test_schedules_commands_never_import_torch() -> None:
    code = (
        "import sys; from pipesim.cli import main; "
        "codes = [main(['schedules', 'list']), main(['schedules', 'show', 'amdp', '-p', '4', '-m', '4'])]; "
        "print(codes, sorted(m for m in ('torch', 'simpy', 'streamlit') if m in sys.modules))"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[0, 0] []"

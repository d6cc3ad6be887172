"""`pipesim compare`, `calibrate`, `predict` and `replay`, in-process through pipesim.cli.main.

The "measured" run here is a simulated trace with known costs (host times, latency, memory), so every
number the commands print can be checked; real measured runs are in tests/traces/test_replay.py.

.venv/bin/pytest tests/pipesim/test_cli_validator.py -q
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pipesim.cli import main
from pipesim.commands import compare as compare_command
from schedules import build
from simulator import CostModel, simulate
from traces.io import load_trace, read_trace, trace_to_dict, write_trace

ROOT = Path(__file__).resolve().parents[2]
KNOWN = CostModel.uniform(
    forward=2e-3,
    backward=4e-3,
    optimizer_step=1e-3,
    latency=50e-6,
    activation_bytes=4096,
    weight_bytes=100_000,
    stash_bytes=30_000,
    host_forward=20e-6,
    host_send=100e-6,
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (just its trace.json) of 1F1B, P = 2, m = 4, 5 steps, and a 2BW trace beside it."""
    root = tmp_path_factory.mktemp("runs")
    write_trace(root / "1f1b" / "trace.json", simulate(build("1f1b", 2, 4, steps=5), KNOWN).trace())
    write_trace(root / "2bw.json", simulate(build("2bw", 2, 4, steps=5), KNOWN).trace())
    return root


def test_compare_prints_tables_and_a_verdict(capsys, folder: Path) -> None:
    code, out, err = run(capsys, "compare", str(folder / "1f1b"), str(folder / "2bw.json"))
    assert (code, err) == (0, "")
    for heading in ("step time", "utilization A", "delay A", "mean A", "action order: not compared"):
        assert heading in out
    assert out.strip().splitlines()[-1].startswith("verdict: differ: step time -")


def test_compare_json_has_the_keys_the_issue_names(capsys, folder: Path) -> None:
    code, out, _ = run(capsys, "compare", str(folder / "1f1b"), str(folder / "1f1b" / "trace.json"), "--json")
    data = json.loads(out)
    assert code == 0 and data["step_time"]["rel_error"] == 0 and data["agrees"]
    assert set(data["utilization"][0]) == {"a", "b", "abs_error"}
    assert data["delay_equal"] is True and data["order_equal"] is True
    assert {row["kind"] for row in data["per_kind"]} == {"F", "B", "OPT", "SEND", "RECV"}


def test_compare_reads_a_file_given_twice_once(capsys, folder: Path, tmp_path: Path, monkeypatch) -> None:
    trace, copy = folder / "1f1b" / "trace.json", tmp_path / "copy.json"
    shutil.copyfile(trace, copy)
    reads = []
    monkeypatch.setattr(compare_command, "load_trace", lambda path: reads.append(path) or load_trace(path))
    outputs = []
    for other in (folder / "1f1b", copy):
        code, out, _ = run(capsys, "compare", str(trace), str(other), "--json")
        data = json.loads(out)
        assert code == 0 and data["agrees"]
        outputs.append({key: value for key, value in data.items() if key not in ("a", "b")})  # labels
    assert len(reads) == 3 and outputs[0] == outputs[1]  # the same file once, the copy apart


def test_calibrate_writes_a_cost_file_whose_prediction_agrees(capsys, folder: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "costs.toml"
    code, out, err = run(capsys, "calibrate", str(folder / "1f1b"), "-o", str(out_file), "--report")
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {out_file}") and "verdict: agree: step time +0.0%" in out
    text = out_file.read_text()
    assert 'host_send = "100 us"' in text and "# note: dropped step 0 of 5" in text
    code, out, _ = run(
        capsys,
        "simulate",
        "--schedule",
        "1f1b",
        "-p",
        "2",
        "-m",
        "4",
        "--steps",
        "5",
        "--costs",
        str(out_file),
        "--json",
    )
    assert code == 0 and json.loads(out)["step_time"] == pytest.approx(
        simulate(build("1f1b", 2, 4, steps=5), KNOWN).metrics().step_time, rel=1e-5
    )


def test_calibrate_json_and_prediction_file(capsys, folder: Path, tmp_path: Path) -> None:
    code, out, _ = run(
        capsys,
        "calibrate",
        str(folder / "1f1b"),
        "-o",
        str(tmp_path / "c.toml"),
        "--json",
        "--prediction",
        str(tmp_path / "p.json"),
    )
    data = json.loads(out)
    assert code == 0 and data["fit"]["entries"] == 2 and data["report"]["order_equal"]
    assert read_trace(tmp_path / "p.json").source == "simulated"


def test_calibrate_states_the_speed_against_the_runs_device_preset(
    capsys, folder: Path, tmp_path: Path
) -> None:
    trace = read_trace(folder / "1f1b" / "trace.json")
    config = {"model": "tiny", "microbatch_size": 8}
    cases = (
        ({"device": "cpu"}, (), "efficiency ", "of the cpu preset's fp32 peak of 166 GFLOP/s"),
        ({"device": "cuda", "gpu": "NVIDIA H200"}, (), "efficiency ", "h100-sxm preset's fp32 peak of 67000"),
        ({"device": "cuda", "gpu": "NVIDIA A100-SXM4-80GB"}, (), "efficiency ", "a100-80gb preset's fp32"),
        ({"device": "cuda", "gpu": "Some GPU"}, (), "no device preset for this run's device", ""),
        ({"device": "cuda", "gpu": "Some GPU"}, ("--device", "h100-sxm"), "efficiency ", "h100-sxm preset's"),
    )
    for meta, flags, first, second in cases:
        path = tmp_path / "measured.json"
        write_trace(path, replace(trace, meta={"config": config, **meta}))
        code, out, err = run(capsys, "calibrate", str(path), "-o", str(tmp_path / "c.toml"), *flags)
        (line,) = [line for line in out.splitlines() if line.startswith("compute: ")]
        assert (code, err) == (0, "") and first in line and second in line, (meta, line)
    code, out, err = run(capsys, "calibrate", str(path), "-o", str(tmp_path / "d.toml"), "--device", "tpu")
    assert code == 2 and err.startswith("pipesim: error: --device: unknown preset 'tpu'")
    assert not (tmp_path / "d.toml").exists()


def test_predict_carries_the_costs_to_other_schedules(capsys, folder: Path, tmp_path: Path) -> None:
    code, out, err = run(
        capsys,
        "predict",
        "--from",
        str(folder / "1f1b"),
        "--schedule",
        "2bw,gpipe",
        "--json",
        "--trace",
        str(tmp_path / "what.json"),
    )
    assert (code, err) == (0, "")
    data = json.loads(out)
    truth = simulate(build("2bw", 2, 4, steps=5), KNOWN).metrics()
    assert data["predictions"][0]["schedule"] == "2bw"
    assert data["predictions"][0]["step_time"] == pytest.approx(truth.step_time, rel=1e-5)
    assert (tmp_path / "what.2bw.json").exists() and (tmp_path / "what.gpipe.json").exists()


def test_predict_another_m_in_text(capsys, folder: Path) -> None:
    code, out, _ = run(capsys, "predict", "--from", str(folder / "1f1b"), "--schedule", "1f1b", "-m", "8")
    assert code == 0 and "measured 1f1b" in out and "1f1b (predicted)" in out and "vs the run" in out


def test_predict_notes_w_as_half_of_b_only_for_targets_that_split_the_backward(capsys, folder: Path) -> None:
    notes = {}
    for targets in ("gpipe,2bw", "gpipe,zb-h1"):
        code, out, _ = run(capsys, "predict", "--from", str(folder / "1f1b"), "--schedule", targets, "--json")
        assert code == 0
        notes[targets] = [note for note in json.loads(out)["notes"] if "split backward" in note]
    assert notes == {
        "gpipe,2bw": [],
        "gpipe,zb-h1": ["the run has no split backward: zb-h1 takes W = B / 2 of each stage"],
    }


def corrupt(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, t: corrupt(d / "x.json", "hello"), "not JSON"),
        (lambda d, t: corrupt(d / "x.json", t[: len(t) // 2]), "not JSON"),
        (
            lambda d, t: corrupt(d / "x.json", t.replace('"format_version":1', '"format_version":9')),
            "format_version 9",
        ),
        (lambda d, t: corrupt(d / "x.json", json.dumps({"a": 1})), "not a pipesim trace"),
        (lambda d, t: d, "a folder without a trace.json"),
        (lambda d, t: d / "missing.json", "no such trace file or run folder"),
    ],
    ids=["not-json", "truncated", "version", "not-a-trace", "folder-without-trace", "missing"],
)
def test_every_trace_reader_refuses_a_bad_file_in_one_line(
    capsys, folder: Path, tmp_path: Path, make, message
) -> None:
    text = (folder / "1f1b" / "trace.json").read_text()
    bad = str(make(tmp_path, text))
    good = str(folder / "1f1b")
    for argv in (
        ["compare", bad, good],
        ["compare", good, bad],
        ["calibrate", bad, "-o", str(tmp_path / "c.toml")],
        ["predict", "--from", bad, "--schedule", "2bw"],
        ["replay", bad],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert err.count("\n") == 1 and err.startswith("pipesim: error:"), (argv, err)
        if argv[0] != "replay":
            assert message in err, (argv, err)
    assert not (tmp_path / "c.toml").exists()  # nothing written


def test_a_trace_that_lies_is_refused(capsys, folder: Path, tmp_path: Path) -> None:
    data = trace_to_dict(read_trace(folder / "1f1b" / "trace.json"))
    data["events"] = [e for e in data["events"] if e["action"] != "1F2@s3v3"]
    path = corrupt(tmp_path / "lies.json", json.dumps(data))
    code, _, err = run(capsys, "compare", str(path), str(path))
    assert code == 2 and "lacks 1 forward or backward action(s) of its schedule (first: 1F2@s3)" in err
    data["meta"]["completed"] = False  # a run that says it stopped early is read as it is
    corrupt(path, json.dumps(data))
    assert run(capsys, "compare", str(path), str(path))[0] == 0
    data["events"].reverse()
    corrupt(path, json.dumps(data))
    code, _, err = run(capsys, "compare", str(path), str(path))
    assert code == 2 and "events must be sorted by start" in err


def test_what_the_calibration_cannot_carry_is_refused(capsys, folder: Path, tmp_path: Path) -> None:
    code, _, err = run(
        capsys,
        "predict",
        "--from",
        str(folder / "1f1b"),
        "--schedule",
        "2bw",
        "-p",
        "4",
        "--trace",
        str(tmp_path / "t.json"),
    )
    assert code == 2 and "-p 4: the run at" in err and "does not say which model its run trained" in err
    assert not (tmp_path / "t.json").exists()
    assert run(capsys, "calibrate", str(folder / "1f1b"), "-o", str(tmp_path / "c.toml"))[0] == 0
    code, _, err = run(
        capsys, "simulate", "--schedule", "1f1b", "-p", "4", "-m", "4", "--costs", str(tmp_path / "c.toml")
    )
    assert code == 2 and "cost model has 2 stages, the schedule needs 4" in err
    code, _, err = run(capsys, "calibrate", str(folder / "1f1b"), "-o", str(tmp_path))
    assert code == 2 and "is a folder" in err


def test_replay_passes_fails_with_a_diff_and_updates(capsys, folder: Path, tmp_path: Path) -> None:
    recording = tmp_path / "rec"
    recording.mkdir()
    shutil.copyfile(folder / "1f1b" / "trace.json", recording / "measured.json")
    (recording / "command.txt").write_text("pipesim simulate (a simulated stand-in)\n")
    (recording / "recording.json").write_text(json.dumps({"tolerance": {"step_time": 0.01}}))
    code, out, _ = run(capsys, "replay", str(recording), "--update")  # fits costs.toml, predicts
    assert code == 0 and "1 of 1 recordings pass" in out
    assert run(capsys, "replay", str(tmp_path))[0] == 0  # a folder of recordings
    costs = recording / "costs.toml"
    costs.write_text(costs.read_text().replace('forward = "2 ms"', 'forward = "2.5 ms"', 1))
    code, out, _ = run(capsys, "replay", str(recording))
    assert code == 1 and "FAILED" in out and "no longer gives predicted.json" in out
    assert "step_time: recorded" in out and "0 of 1 recordings pass" in out
    assert run(capsys, "replay", str(recording), "--update")[0] == 0  # re-fitted from the measurement
    code, _, err = run(capsys, "replay", str(tmp_path / "nothing"))
    assert code == 2 and "no such recording" in err


def test_an_output_path_that_cannot_take_a_file_is_one_line_and_nothing_is_done(
    capsys, folder: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    good = str(folder / "1f1b")
    for argv in (
        ["calibrate", good, "-o", str(blocker / "c.toml")],
        ["calibrate", good, "-o", str(tmp_path / "c.toml"), "--prediction", str(tmp_path)],
        ["predict", "--from", good, "--schedule", "2bw", "--trace", str(blocker / "t.json")],
        ["simulate", "--schedule", "1f1b", "-p", "2", "-m", "4", "--trace", str(blocker / "t.json")],
        ["simulate", "--schedule", "1f1b", "-p", "2", "-m", "4", "--chrome", str(tmp_path)],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, err)
        assert "is a file, not a folder" in err or "is a folder, not a file name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # not even the cost file


def test_predict_says_when_the_targets_ranks_would_share_the_runs_cpus(capsys, tmp_path: Path) -> None:
    recorded = read_trace(ROOT / "traces" / "recorded" / "1f1b-p2-m8" / "measured.json")  # 1 thread per rank
    for cpus, ranks, crowded in ((2, 4, True), (8, 4, False), (2, 2, False)):
        path = tmp_path / f"cpus{cpus}.json"
        write_trace(path, replace(recorded, meta={**recorded.meta, "cpus": cpus}))
        code, out, err = run(
            capsys, "predict", "--from", str(path), "--schedule", "1f1b", "-p", str(ranks), "--json"
        )
        notes = json.loads(out)["notes"]
        said = [note for note in notes if "take turns" in note]
        assert (code, err, bool(said)) == (0, "", crowded), (cpus, ranks, notes)
        if crowded:
            assert said[0].startswith(
                "P = 4 ranks x 1 thread(s) want 4 CPUs and the measured run's machine has 2"
            )

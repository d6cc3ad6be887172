"""Run folders read by the dashboard: discovery, a growing metrics.jsonl, the traces Compare offers.

.venv/bin/python -m pytest -q tests/dashboard/test_rundirs.py
"""

from __future__ import annotations

import json
from pathlib import Path

from dashboard.rundirs import find_runs, parse_metrics, read_run, summary, trace_files


def test_a_half_written_last_line_waits_and_bad_lines_are_counted() -> None:
    rows, torn, bad = parse_metrics('{"step": 0, "loss": 5}\nnot json\n[1]\n{"step": 1, "lo')
    assert (rows, torn, bad) == ([{"step": 0, "loss": 5}], True, 2)
    assert parse_metrics('{"step": 0}\n{"step": 1}') == ([{"step": 0}, {"step": 1}], False, 0)


def test_runs_are_found_two_levels_deep_or_the_folder_itself(runs: Path) -> None:
    nested = runs / "sweep" / "a"
    nested.mkdir(parents=True)
    (nested / "metrics.jsonl").write_text("")
    assert [path.relative_to(runs).as_posix() for path in find_runs(runs)] == ["1f1b", "2bw", "sweep/a"]
    assert find_runs(runs / "2bw") == [runs / "2bw"]
    assert find_runs(runs / "missing") == []


def test_a_run_without_a_trace_is_live_while_its_metrics_grow(runs: Path) -> None:
    (runs / "2bw" / "trace.json").unlink()
    modified = (runs / "2bw" / "metrics.jsonl").stat().st_mtime
    run = read_run(runs / "2bw", root=runs)
    assert run.live(now=modified + 5) and summary(run, now=modified + 5)["status"] == "running"
    assert not run.live(now=modified + 3600)
    assert summary(run, now=modified + 3600)["status"] == "stopped (no trace.json)"
    finished = summary(read_run(runs / "1f1b", root=runs))
    assert (finished["status"], finished["optimizer"], finished["best val loss"]) == (
        "finished",
        "adamw",
        None,
    )


def test_a_broken_config_is_reported_not_raised(runs: Path) -> None:
    (runs / "1f1b" / "config.json").write_text("{")
    run = read_run(runs / "1f1b", root=runs)
    assert run.problem.startswith("config.json: unreadable") and len(run.metrics) == 4


def test_compare_offers_every_trace_file_and_the_recordings(runs: Path, tmp_path: Path) -> None:
    (runs / "1f1b" / "trace.chrome.json").write_text(json.dumps({"traceEvents": []}))
    (runs / "study").mkdir()  # a study folder's JSON files are not traces
    for name in ("study.json", "lrs.json", "predicted.json"):
        (runs / "study" / name).write_text("{}")
    recorded = tmp_path / "recorded" / "zb"
    recorded.mkdir(parents=True)
    for name in ("measured.json", "predicted.json", "recording.json"):
        (recorded / name).write_text("{}")
    assert list(trace_files(runs, recorded.parent)) == [
        "1f1b/trace.json",
        "2bw/trace.json",
        "recording/measured.json",
        "recording/predicted.json",
        "recorded/zb/measured.json",
        "recorded/zb/predicted.json",
    ]

"""Importing torch.profiler Chrome traces: small hand-written profiles of both span families, every error.

.venv/bin/pytest tests/traces/test_torch_profile.py -q

A span here lasts 10 us and encloses a communication operator at +0.5 us (which must not count) and two
compute operators from +2 to +7 us, so a span at t splits into the receive wait [t, t+2], the compute
[t+2, t+7] and the send posting [t+7, t+10]. Spans follow each other every 20 us.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from pipesim.cli import main
from schedules import build
from schedules.ir import Kind
from traces.io import dumps_trace, read_trace
from traces.metrics import compute_metrics
from traces.schema import TraceError
from traces.torch_profile import import_profiles

OPT = "Optimizer.step#SGD.step"
# ScheduleGPipe, P = 2, m = 2, one step: the same names on both ranks (the spans carry no stage)
GPIPE = ["Forward 0", "Forward 1", "Backward 0", "Backward 1", OPT]
# pipesim's 1F1B (P = 2, m = 2) run by _PipelineScheduleRuntime, with the runtime's own extra spans
RUNTIME_1F1B = [
    [
        "PP:0UNSHARD",
        "PP:0F0",
        "PP:0SEND_F0",
        "PP:0F1",
        "PP:0SEND_F1",
        "PP:0RECV_B0",
        "PP:0B0",
        "PP:0RECV_B1",
        "PP:0B1",
        "PP:0REDUCE_GRAD",
        "PP:0RESHARD",
        OPT,
    ],
    [
        "PP:1UNSHARD",
        "PP:1RECV_F0",
        "PP:1F0",
        "PP:1B0",
        "PP:1SEND_B0",
        "PP:1RECV_F1",
        "PP:1F1",
        "PP:1B1",
        "PP:1SEND_B1",
        "PP:1REDUCE_GRAD",
        "PP:1RESHARD",
        OPT,
    ],
]


def span(name: str, ts: float, thread: int, *, ops: bool = True, cat: str = "user_annotation") -> list[dict]:
    where = {"pid": thread, "tid": thread}
    events = [{"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": 10.0, **where}]
    if ops:
        events += [
            {"ph": "X", "cat": "cpu_op", "name": "c10d::recv_", "ts": ts + 0.5, "dur": 1.0, **where},
            {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "ts": ts + 2, "dur": 3.0, **where},
            {"ph": "X", "cat": "cpu_op", "name": "aten::tanh", "ts": ts + 5, "dur": 2.0, **where},
        ]
    return events


def profile(names: list[str], *, rank: int | None = None, world: int = 2, start: float = 1000.0, ops=True):
    """A Chrome trace as torch.profiler writes it: spans on the main thread, distributedInfo if rank."""
    thread = 100 + (rank or 0)
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": thread, "args": {"name": "py"}}
    ]
    for index, name in enumerate(names):
        events += span(name, start + 20 * index, thread, ops=ops)
    data: dict[str, Any] = {"schemaVersion": 1, "traceEvents": events}
    if rank is not None:
        data.update(distributedInfo={"backend": "gloo", "rank": rank, "world_size": world}, host_name="vm")
    return data


def write(tmp_path: Path, *profiles: Any) -> list[str]:
    paths = []
    for index, data in enumerate(profiles):
        path = tmp_path / f"rank{index}.json"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data if isinstance(data, str) else json.dumps(data))
        paths.append(str(path))
    return paths


def gpipe_files(tmp_path: Path, *, steps: int = 1, **kwargs) -> list[str]:
    return write(tmp_path, *(profile(GPIPE * steps, rank=rank, **kwargs) for rank in range(2)))


def test_gpipe_spans_become_pipesims_lowered_actions_with_split_times(tmp_path: Path) -> None:
    files = write(tmp_path, profile(GPIPE, rank=0, start=1000.0), profile(GPIPE, rank=1, start=1005.0))
    trace = import_profiles(files, schedule="gpipe", microbatches=2)
    planned = build("gpipe", 2, 2, steps=1)
    assert trace.source == "measured" and trace.schedule.name == "gpipe" and trace.schedule.steps == 1
    for rank in range(2):
        events = trace.rank_events(rank)
        assert sorted(map(str, (e.action for e in events))) == sorted(map(str, planned.actions[rank]))
        serial = [e.action for e in events if e.stream != "send"]
        assert serial == [a for a in planned.actions[rank] if a.kind not in (Kind.SEND_F, Kind.SEND_B)]
    # rank 1's 'Forward 0' at 1005 us, relative to the earliest span (rank 0's at 1000 us)
    times = {str(e.action): (e.start, e.end) for e in trace.rank_events(1)}
    assert times["1RECV_F0"] == pytest.approx((5e-6, 7e-6))
    assert times["1F0@v0"] == pytest.approx((7e-6, 12e-6))
    assert times["1OPT@v1"] == pytest.approx((85e-6, 95e-6))  # the optimizer span is taken whole
    first = trace.rank_events(0)
    assert (str(first[0].action), str(first[1].action)) == ("0F0@v0", "0SEND_F0")
    assert first[1].start == first[0].end == pytest.approx(7e-6) and first[1].end == pytest.approx(10e-6)
    assert {e.bytes for e in trace.events} == {0} and {e.memory for e in trace.events} == {None}
    assert trace.meta["profiles"][1]["file"] == files[1] and trace.meta["backend"] == "gloo"
    assert "OPT events" in trace.meta["optimizer"] and "memory" in trace.meta["not_recorded"]


def test_runtime_spans_map_one_to_one_and_postings_are_left_out(tmp_path: Path) -> None:
    files = write(tmp_path, *(profile(names, rank=rank) for rank, names in enumerate(RUNTIME_1F1B)))
    trace = import_profiles(files, schedule="1f1b", microbatches=2)
    planned = build("1f1b", 2, 2, steps=1)
    for rank in range(2):
        assert sorted(str(e.action) for e in trace.rank_events(rank)) == sorted(
            map(str, planned.actions[rank])
        )
    times = {str(e.action): (e.start, e.end) for e in trace.rank_events(0)}
    # origin: rank 0's 'PP:0F0' at 1020 us (its UNSHARD at 1000 us has no pipesim action)
    assert times["0F0@v0"] == pytest.approx((2e-6, 7e-6))
    assert times["0SEND_F0"] == pytest.approx((20e-6, 30e-6))  # a runtime SEND span is taken whole
    assert times["0RECV_B0"] == pytest.approx((100e-6, 102e-6))  # the wait inside 'PP:0B0', not the posting
    left_out = trace.meta["profiles"][1]["left_out"]
    assert left_out == {"PP:RECV_F": 2, "PP:REDUCE_GRAD": 1, "PP:RESHARD": 1, "PP:UNSHARD": 1}
    assert trace.meta["spans"].startswith("_PipelineScheduleRuntime")


def test_events_are_sorted_and_the_metrics_read_them(tmp_path: Path) -> None:
    trace = import_profiles(gpipe_files(tmp_path, steps=2), schedule="gpipe", microbatches=2)
    keys = [(e.start, e.rank) for e in trace.events]
    assert keys == sorted(keys) and min(e.start for e in trace.events) == 0.0
    assert all(e.end >= e.start for e in trace.events)
    metrics = compute_metrics(trace)
    assert metrics.steps == 2 and metrics.delay == [0, 0] and metrics.weight_versions == [1, 1]
    assert all(0 < u <= 1 for u in metrics.utilization)
    opts = [str(e.action) for e in trace.rank_events(0) if e.action.kind is Kind.OPT]
    assert opts == ["0OPT@v1", "0OPT@s1v2"]  # flush: step k reads version k, its update writes k + 1
    again = import_profiles(gpipe_files(tmp_path, steps=2), schedule="gpipe", microbatches=2)
    assert dumps_trace(again) == dumps_trace(trace)


def test_a_span_without_operators_stays_whole(tmp_path: Path) -> None:
    trace = import_profiles(gpipe_files(tmp_path, ops=False), schedule="gpipe", microbatches=2)
    kinds = {e.action.kind for e in trace.events}
    assert kinds == {Kind.F, Kind.B, Kind.OPT}  # nothing to tell the waiting from the compute
    assert trace.rank_events(0)[0].end - trace.rank_events(0)[0].start == pytest.approx(10e-6)


def test_gzipped_profiles_read_and_gpu_copies_of_the_spans_are_skipped(tmp_path: Path) -> None:
    plain = import_profiles(gpipe_files(tmp_path), schedule="gpipe", microbatches=2)
    zipped = []
    for rank in range(2):
        data = profile(GPIPE, rank=rank)
        for index, name in enumerate(GPIPE):  # kineto repeats each span on the GPU stream it launched on
            data["traceEvents"] += span(name, 1003.0 + 20 * index, 7, ops=False, cat="gpu_user_annotation")
        path = tmp_path / f"rank{rank}.pt.trace.json.gz"
        path.write_bytes(gzip.compress(json.dumps(data).encode()))
        zipped.append(str(path))
    assert import_profiles(zipped, schedule="gpipe", microbatches=2).events == plain.events


def test_optimizer_spans_merge_per_step_and_may_be_missing(tmp_path: Path) -> None:
    names = [OPT, "Forward 0", "Forward 1", "Backward 0", "Backward 1", OPT, "Optimizer.step#Muon.step"]
    trace = import_profiles(
        write(tmp_path, profile(names, rank=0, world=1)), schedule="gpipe", microbatches=2
    )
    opts = [e for e in trace.events if e.action.kind is Kind.OPT]
    assert len(opts) == 1 and (opts[0].end - opts[0].start) == pytest.approx(
        30e-6
    )  # two optimizers, one step
    bare = [name for name in GPIPE if name != OPT]
    trace = import_profiles(write(tmp_path, profile(bare)), schedule="gpipe", microbatches=2)
    assert not [e for e in trace.events if e.action.kind is Kind.OPT] and "no OPT" in trace.meta["optimizer"]


def test_ranks_come_from_the_profiles_then_the_file_order_or_a_list(tmp_path: Path) -> None:
    swapped = write(tmp_path, profile(RUNTIME_1F1B[1], rank=1), profile(RUNTIME_1F1B[0], rank=0))
    trace = import_profiles(swapped, schedule="1f1b", microbatches=2)
    assert [p["file"] for p in trace.meta["profiles"]] == [swapped[1], swapped[0]]
    assert import_profiles(swapped, schedule="1f1b", microbatches=2, ranks=[1, 0]).events == trace.events
    unrecorded = write(tmp_path, profile(RUNTIME_1F1B[1]), profile(RUNTIME_1F1B[0]))
    with pytest.raises(TraceError, match="span 'PP:1F0' of stage 1"):
        import_profiles(unrecorded, schedule="1f1b", microbatches=2)  # file order: rank 0 holds stage 1
    assert import_profiles(unrecorded, schedule="1f1b", microbatches=2, ranks=[1, 0]).events == trace.events


def _cases() -> list[tuple[str, list[Any], dict[str, Any], str]]:
    """(id, profiles, import_profiles keywords, the one line expected). Each names one way in to fail."""
    r0, r1 = profile(GPIPE, rank=0), profile(GPIPE, rank=1)
    gpipe = {"schedule": "gpipe", "microbatches": 2}
    one_f_one_b = {"schedule": "1f1b", "microbatches": 2}
    runtime = [profile(names, rank=rank) for rank, names in enumerate(RUNTIME_1F1B)]
    two_threads = profile(GPIPE, rank=0)
    two_threads["traceEvents"] += span("Forward 0", 5000.0, 7)
    mixed = profile(["PP:0F0", *GPIPE], rank=0)
    no_dur = profile(GPIPE, rank=0)
    no_dur["traceEvents"][1].pop("dur")
    return [
        ("not-json", ["{oops", r1], gpipe, "rank0.json: not JSON (line 1"),
        ("not-utf8", [b"\xff\xfe{", r1], gpipe, "rank0.json: not JSON (not UTF-8 text)"),
        ("bad-gzip", [b"\x1f\x8b\x08\x00", r1], gpipe, "rank0.json: cannot read profile ("),
        ("missing", [], {**gpipe, "paths": ["/nonexistent/rank0.json"]}, "cannot read profile (No such file"),
        ("not-chrome", [{"events": []}, r1], gpipe, "rank0.json: not a Chrome trace (no traceEvents list)"),
        ("a-number", ["3", r1], gpipe, "not a Chrome trace"),
        (
            "no-spans",
            [profile(["aten::mm", OPT], rank=0), r1],
            gpipe,
            "no torch.distributed.pipelining spans",
        ),
        ("bad-span", [profile(["PP:0X1"], rank=0), r1], gpipe, "span 'PP:0X1' does not parse"),
        ("overlap", [profile(["PP:(0F1;1B0)OVERLAP_F_B"], rank=0), r1], gpipe, "does not parse"),
        ("big-microbatch", [profile(["Forward 2"], rank=0), r1], gpipe, "names microbatch 2, but -m is 2"),
        ("no-dur", [no_dur, r1], gpipe, "span 'Forward 0' has no numeric ts and dur"),
        ("too-few-files", [r0], gpipe, "1 profile(s) given, but"),
        ("same-rank", [r0, profile(GPIPE, rank=0)], gpipe, "two profiles are from rank 0"),
        ("global-ranks", [profile(GPIPE, rank=2, world=2), r1], gpipe, "from ranks [1, 2]"),
        ("ranks-list", [r0, r1], {**gpipe, "ranks": [0, 0]}, "--ranks [0, 0] must name each"),
        ("two-threads", [two_threads, r1], gpipe, "pipelining spans on 2 threads"),
        ("mixed-file", [mixed, r1], gpipe, "mixes the spans of ScheduleGPipe"),
        ("mixed-files", [runtime[0], r1], one_f_one_b, "the profiles mix span families"),
        (
            "wrong-order",
            [r0, r1],
            one_f_one_b,
            "rank 1 ran 1F1 as its compute action 1, where pipesim's 1f1b runs 1B0",
        ),
        ("wrong-stage", [runtime[1], runtime[0]], {**one_f_one_b, "ranks": [0, 1]}, "of stage 1, which"),
        ("cut-short", [profile(GPIPE[:3], rank=0), r1], gpipe, "ran 0B1 0 time(s) but 0B0 1"),
        ("not-gpipe", [profile(["PP:0I0", *RUNTIME_1F1B[0]], rank=0), runtime[1]], one_f_one_b, "ran 0I0"),
        ("uneven-ranks", [profile(GPIPE * 2, rank=0), r1], gpipe, "different numbers of steps: [2, 1]"),
        ("steps", [r0, r1], {**gpipe, "steps": 3}, "--steps 3, but the profiles hold 1 step(s)"),
        ("schedule", [r0, r1], {**gpipe, "schedule": "2bw"}, "knows the schedules gpipe, 1f1b, got '2bw'"),
        ("m", [r0, r1], {**gpipe, "microbatches": 0}, "microbatches m must be at least 1"),
    ]


@pytest.mark.parametrize(
    ("profiles", "keywords", "message"), [c[1:] for c in _cases()], ids=[c[0] for c in _cases()]
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path: Path, profiles, keywords, message) -> None:
    keywords = dict(keywords)
    files = keywords.pop("paths", None) or write(tmp_path, *profiles)
    with pytest.raises(TraceError) as raised:
        import_profiles(files, **keywords)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_command_writes_a_trace_or_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    files = gpipe_files(tmp_path, steps=2)
    out = tmp_path / "out" / "trace.json"
    assert main(["import-profile", *files, "--schedule", "gpipe", "-m", "2", "-o", str(out)]) == 0
    assert "gpipe, P = 2, m = 2, 2 step(s)" in capsys.readouterr().out
    written = out.read_text()
    assert read_trace(out).schedule.steps == 2 and list(out.parent.iterdir()) == [out]
    for argv in (
        [*files, "--schedule", "1f1b", "-m", "2"],  # the order is GPipe's
        [files[0], "--schedule", "gpipe", "-m", "2"],  # one profile of two ranks
        [*files, "--schedule", "gpipe", "-m", "2", "--ranks", "a,b"],
        [*files, "--schedule", "zb-h1", "-m", "2"],
    ):
        assert main(["import-profile", *argv, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pipesim") and err.count("\n") == 1, err
    assert out.read_text() == written and list(out.parent.iterdir()) == [out]  # nothing written on error

"""PyTorch schedule CSV interop: export, import (both notations), malformed files, and PyTorch's own loader.

    .venv/bin/pytest tests/schedules/test_csv_io.py -q

Only test_pytorch_* import torch, and only inside the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schedules import Kind, build
from schedules.csv_io import export_csv, import_csv, read_csv, torch_text, write_csv
from schedules.graph import validate
from schedules.ir import COMPUTE_KINDS, Schedule, ScheduleError
from schedules.passes import lower

# (name, ranks, microbatches, chunks): every registered schedule at a size it accepts
EVERY_SCHEDULE = [
    ("gpipe", 4, 8, 1),
    ("1f1b", 4, 8, 1),
    ("1f1b", 3, 2, 1),  # m < P: warm-up capped at m
    ("interleaved", 4, 8, 2),
    ("interleaved", 2, 4, 3),  # three chunks per rank
    ("zb-h1", 4, 8, 1),  # I and W must survive as I and W
    ("pipedream", 4, 8, 1),
    ("2bw", 4, 8, 1),
    ("amdp", 4, 8, 1),  # two pipelines: stage numbers beyond P
    ("zb-v", 4, 8, 2),  # V placement: stage 7 on rank 0
    ("dualpipev", 4, 8, 2),  # overlapped pairs: one cell each
    ("looped-bfs", 2, 3, 2),
    ("interleaved-zb", 4, 8, 2),
]


def compute_order(schedule: Schedule, step: int = 0) -> list[list[str]]:
    """Each rank's compute actions of one step, as PyTorch text."""
    return [
        [torch_text(a) for a in actions if a.kind in COMPUTE_KINDS and a.step == step]
        for actions in schedule.actions
    ]


@pytest.mark.parametrize(("name", "ranks", "microbatches", "chunks"), EVERY_SCHEDULE)
def test_round_trip_keeps_every_compute_action(name: str, ranks: int, microbatches: int, chunks: int) -> None:
    original = build(name, ranks, microbatches, chunks=chunks)
    pipelines = original.layout.pipelines
    for comms in (False, True):
        imported = import_csv(export_csv(original, comms=comms).text, pipelines=pipelines)
        assert compute_order(imported) == compute_order(original), f"comms={comms}"
        assert imported.layout.placement == original.layout.placement
        assert imported.microbatches == microbatches
        assert imported.chunks == original.chunks
        assert imported.name == "csv" and imported.synchronous
    if pipelines == 1:  # AMDP's stages see m / pipelines microbatches: only meaningful as AMDP
        validate(lower(imported))


def test_export_text_is_one_row_per_rank_in_pytorch_notation() -> None:
    text = export_csv(build("1f1b", 2, 2)).text
    assert text == "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n"
    comms = export_csv(build("1f1b", 2, 1), comms=True).text
    assert comms == "0F0,0SEND_F0,0RECV_B0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n"
    assert export_csv(build("zb-h1", 2, 1)).text == "0F0,0I0,0W0\n1F0,1I0,1W0\n"


def test_export_warns_about_what_the_csv_cannot_say() -> None:
    assert export_csv(build("1f1b", 4, 8)).warnings == ()
    several = export_csv(build("1f1b", 4, 8, steps=3), step=2)
    assert len(several.warnings) == 1 and "3 steps; exported step 2 only" in several.warnings[0]
    assert compute_order(import_csv(several.text)) == compute_order(build("1f1b", 4, 8))
    pipedream = export_csv(build("pipedream", 4, 8, steps=2)).warnings
    assert any("asynchronous" in w and "optimizer steps and weight versions" in w for w in pipedream)
    amdp = " ".join(export_csv(build("amdp", 4, 8)).warnings)
    assert "SEND_G" in amdp and "RECV_W" in amdp and "2 pipelines" in amdp
    with pytest.raises(ScheduleError, match="step 3 is outside"):
        export_csv(build("1f1b", 4, 8, steps=3), step=3)


def test_new_notation_reads_b_as_full_backward_and_idle_cells() -> None:
    schedule = import_csv("0F0,,0F1,0B0,0B1\n,1F0,1B0,1F1,1B1\n")
    assert [a.kind for a in schedule.actions[0]] == [Kind.F, Kind.F, Kind.B, Kind.B]
    assert schedule.layout.placement == (0, 1)
    validate(lower(schedule))


def test_old_notation_reads_b_as_input_backward_and_bw_as_full() -> None:
    old = "0F0,0F1,0B0,0W0,0BW1\n1F0,1B0,1W0,1F1,1BW1\n"
    for notation in ("old", "auto"):
        schedule = import_csv(old, notation=notation)
        assert [str(a.kind) for a in schedule.actions[0]] == ["F", "F", "I", "W", "B"]
        assert [str(a.kind) for a in schedule.actions[1]] == ["F", "I", "W", "F", "B"]
        validate(lower(schedule))
    with pytest.raises(ScheduleError, match=r"row 1, cell 5: 'BW' is the old notation's full backward"):
        import_csv(old, notation="new")


def test_auto_notation_without_bw_decides_by_w() -> None:
    split_old = import_csv("0F0,0B0,0W0\n")  # W but no I: B is the input backward
    assert [str(a.kind) for a in split_old.actions[0]] == ["F", "I", "W"]
    split_new = import_csv("0F0,0I0,0W0\n")
    assert [str(a.kind) for a in split_new.actions[0]] == ["F", "I", "W"]
    with pytest.raises(ScheduleError, match=r"row 1, cell 2: 'I' is the new notation's input backward"):
        import_csv("0F0,0I0,0W0\n", notation="old")
    with pytest.raises(ScheduleError, match="notation must be one of auto, new, old, got 'newest'"):
        import_csv("0F0,0B0\n", notation="newest")  # type: ignore[arg-type]


def test_pytorch_bookkeeping_cells_are_ignored_and_an_overlap_stays_a_pair() -> None:
    text = "0UNSHARD,0F0,0F1,(0B0;0F2)OVERLAP_F_B,0B1,0B2,0REDUCE_GRAD,0RESHARD\n"
    schedule = import_csv(text)
    assert [str(a) for a in schedule.actions[0]] == [
        "0F0",
        "0F1",
        "0OVERLAP_F_B2",
        "0F2",
        "0B0",
        "0B1",
        "0B2",
    ]
    assert export_csv(schedule).text == "0F0,0F1,(0F2;0B0)OVERLAP_F_B,0B1,0B2\n"  # forward first
    validate(lower(schedule))


# (csv text, keyword arguments, what the one-line error must say): each a way a file can be wrong
MALFORMED = [
    ("0F0,0X1\n", {}, r"row 1, cell 2: malformed action '0X1'"),  # unknown kind
    ("0F0\n1F0,F1\n", {}, r"row 2, cell 2: malformed action 'F1'"),  # no stage
    ("0F0,0B\n", {}, r"row 1, cell 2: action '0B' names no microbatch"),
    ("0F0,(0F1;)OVERLAP_F_B\n", {}, r"row 1, cell 2: malformed action"),
    ("0F0,0F1,(0F2;0W0)OVERLAP_F_B\n", {}, r"cell 3: .* one forward and one backward"),  # W is no backward
    ("0F0,(0F1;0F2)OVERLAP_F_B\n", {}, r"cell 2: .* one forward and one backward"),
    ("0F0,0F1,0B0,0BW1,0I1\n", {}, r"mixes the old notation \(BW at row 1, cell 4\)"),
    ("0F0,0F0,0B0\n", {}, r"row 1, cell 2: F of stage 0, microbatch 0 appears twice"),
    ("0F0,0B1,0F1\n", {}, r"row 1, cell 2: B of stage 0, microbatch 1 comes before its F"),
    ("0F0,0F1,0W0,0B0,0BW1\n", {}, r"row 1, cell 3: W of stage 0, microbatch 0 comes before its B"),  # old
    ("0F0,0B0\n0F1,0B1\n", {}, r"row 2, cell 1: stage 0 already runs on row 1"),
    ("0F0\n2F0\n", {}, r"stage 1 appears in no row"),
    ("0F0,0B0\n1F0,1B0\n", {"chunks": 2}, r"2 stages on 2 rows is not 2 chunks per rank"),
    ('0F0,"0B0\n', {}, r"row 1: not CSV \(unexpected end of data\)"),  # unclosed quote
    ("\n\n", {}, r"no actions"),
    ("0REDUCE_GRAD\n", {}, r"no forward or backward actions"),
]


@pytest.mark.parametrize(("text", "kwargs", "message"), MALFORMED)
def test_malformed_csv_is_one_line_naming_the_place(text: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as error:
        import_csv(text, source="bad.csv", **kwargs)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("bad.csv: ")


def test_files_are_written_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "out" / "interleaved.csv"
    schedule = build("interleaved", 4, 8, chunks=2)
    export = write_csv(path, schedule)
    assert path.read_text(encoding="utf-8") == export.text
    assert [p.name for p in path.parent.iterdir()] == ["interleaved.csv"]  # no temporary file left
    assert compute_order(read_csv(path)) == compute_order(schedule)
    with pytest.raises(ScheduleError, match=r"cannot read schedule CSV .*missing\.csv"):
        read_csv(tmp_path / "missing.csv")


# --- PyTorch's own loader and validator (torch imported inside the tests only) ----------------------


def _pytorch_runtime(ranks: int, stages: int, microbatches: int):
    """A _PipelineScheduleRuntime over mock stages, as torch's own _schedule_visualizer builds one."""
    from unittest import mock

    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime
    from torch.distributed.pipelining.stage import PipelineStage

    stage = mock.create_autospec(PipelineStage, instance=True)
    stage.group_rank, stage.group_size, stage.num_stages, stage.submod = 0, ranks, stages, None
    return _PipelineScheduleRuntime([stage] * (stages // ranks), microbatches)


@pytest.mark.parametrize(
    ("name", "ranks", "microbatches", "chunks"),
    [
        ("gpipe", 4, 8, 1),
        ("1f1b", 4, 8, 1),
        ("interleaved", 4, 8, 2),
        ("zb-h1", 4, 8, 1),
        ("looped-bfs", 4, 8, 2),
        ("interleaved-zb", 4, 8, 2),
        ("zb-v", 4, 8, 2),  # V placement: PyTorch infers stage 7 on rank 0 from the rows
        ("dualpipev", 4, 8, 2),  # (F;B)OVERLAP_F_B cells
    ],
)
def test_pytorch_loader_accepts_our_csv(
    tmp_path: Path, name: str, ranks: int, microbatches: int, chunks: int
) -> None:
    schedule = build(name, ranks, microbatches, chunks=chunks)
    stages = schedule.num_stages
    compute, comms = tmp_path / "compute.csv", tmp_path / "comms.csv"
    write_csv(compute, schedule)
    write_csv(comms, schedule, comms=True)

    runtime = _pytorch_runtime(ranks, stages, microbatches)
    runtime._load_csv(str(compute))  # _validate_schedule, then its own send/recv lowering (fails on deadlock)
    assert runtime.stage_index_to_group_rank == dict(enumerate(schedule.layout.placement))
    lowered = {str(a) for actions in runtime.pipeline_order_with_comms.values() for a in actions}
    assert {"0SEND_F0", "1RECV_F0", f"{stages - 1}SEND_B0"} <= lowered
    ours = [row.split(",") for row in compute.read_text().splitlines()]
    assert [[str(a) for a in runtime.pipeline_order[r]] for r in range(ranks)] == ours

    runtime = _pytorch_runtime(ranks, stages, microbatches)
    runtime._load_csv(str(comms), format="compute_comms")
    assert [str(a) for a in runtime.pipeline_order_with_comms[1]] == comms.read_text().splitlines()[1].split(
        ","
    )


def test_pytorch_loader_rejects_a_broken_csv(tmp_path: Path) -> None:
    """The control: the check above could fail, because PyTorch does reject a bad order."""
    path = tmp_path / "broken.csv"
    path.write_text("0F0,0B0\n1B0,1F0\n")
    with pytest.raises(AssertionError, match="without first running Forward"):
        _pytorch_runtime(2, 2, 1)._load_csv(str(path))


def test_pytorch_orders_import_as_ours(tmp_path: Path) -> None:
    """PyTorch's own GPipe and interleaved orders (idle cells, REDUCE_GRAD) import and validate."""
    import csv

    from torch.distributed.pipelining._schedule_visualizer import get_schedule_ops

    for torch_name, ours, chunks in (("GPipe", "gpipe", 1), ("Interleaved1F1B", "interleaved", 2)):
        ops = get_schedule_ops(torch_name, 4, 8, num_stages_per_rank=chunks)
        path = tmp_path / f"{ours}.csv"
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([["" if a is None else str(a) for a in rank] for rank in ops])
        imported = read_csv(path)
        assert imported.chunks == chunks and imported.microbatches == 8
        validate(lower(imported))
        if ours == "gpipe":  # identical to our generator
            assert compute_order(imported) == compute_order(build("gpipe", 4, 8))

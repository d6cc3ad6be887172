"""What the pages turn into inputs and tables, without Streamlit: URL settings, uploads, cost choices,
the comparison tables.

.venv/bin/python -m pytest -q tests/dashboard/test_inputs.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashboard.inputs import CostChoice, cost_model, trace_from_bytes
from dashboard.params import Param, parse, read_query, write_query
from dashboard.tables import comparison_tables, metrics_rows, order_lines
from schedules import build
from simulator import simulate
from simulator.units import CostError
from traces.compare import compare_traces
from traces.io import dumps_trace
from traces.schema import TraceError

P = Param(key="p", default=4, kind="int", minimum=1, maximum=64)
NAMES = Param(key="schedules", default=["1f1b"], kind="strs", choices=("gpipe", "1f1b", "2bw"))
PARAMS = (
    P,
    NAMES,
    Param(key="sends", default=True, kind="bool"),
    Param(key="budget", default=0.0, kind="float"),
)


@pytest.mark.parametrize(
    ("param", "raw", "value"),
    [
        (P, "8", 8),
        (P, "0", 4),  # below the minimum: the default
        (P, "eight", 4),
        (NAMES, "gpipe,2bw", ["gpipe", "2bw"]),
        (NAMES, "gpipe,nope", ["1f1b"]),  # one unknown name spoils the list
        (NAMES, "", ["1f1b"]),
        (PARAMS[2], "0", False),
        (PARAMS[2], "yes", True),
    ],
)
def test_the_url_value_or_the_default(param: Param, raw: str, value: object) -> None:
    assert parse(param, raw) == value


def test_settings_round_trip_through_the_url_leaving_defaults_out() -> None:
    values = {"p": 8, "schedules": ["gpipe", "2bw"], "sends": True, "budget": 80.0}
    query = write_query(PARAMS, values)
    assert query == {"p": "8", "schedules": "gpipe,2bw", "budget": "80"}
    assert read_query(PARAMS, query) == values


def test_an_uploaded_trace_reads_as_the_file_would_or_fails_in_one_line() -> None:
    trace = simulate(build("1f1b", 2, 2)).trace()
    text = dumps_trace(trace)
    assert trace_from_bytes(text.encode(), name="t.json") == trace
    failures = {
        text[: len(text) // 2]: "t.json: not JSON (line 1: ",
        "[1, 2]": 't.json: not a pipesim trace (no "format": "pipesim-trace")',
        json.dumps(
            {**json.loads(text), "format_version": 2}
        ): "t.json: trace format_version 2, this pipesim reads 1",
    }
    for broken, start in failures.items():
        with pytest.raises(TraceError) as error:
            trace_from_bytes(broken.encode(), name="t.json")
        assert str(error.value).startswith(start) and "\n" not in str(error.value)
    with pytest.raises(TraceError, match="truncated"):
        trace_from_bytes(text[:-40].encode(), name="t.json")


def test_cost_choices_are_the_commands_cost_sources(tmp_path: Path) -> None:
    schedule = build("1f1b", 2, 4)
    assert cost_model(CostChoice(), schedule).stages[0].forward == 1.0
    values = CostChoice(source="values", values=(("forward", "2ms"), ("latency", " ")))
    assert cost_model(values, schedule).stages[0].backward == pytest.approx(4e-3)
    assert values.notes() == ("note: --tf 2ms without --tb: t_B = 2 x t_F = 4ms (give --tb to choose it)",)
    presets = cost_model(
        CostChoice(source="presets", model="tiny", device="cpu", microbatch_size=2), schedule
    )
    assert presets.microbatch_size == 2 and len(presets.stages) == 2
    three = "[stages.0]\nforward = 1\n[stages.1]\nforward = 1\n[stages.2]\nforward = 1\n"
    with pytest.raises(CostError, match=r"^three\.toml: cost model has 3 stages, the schedule needs 2"):
        cost_model(CostChoice(source="file", file_name="three.toml", file_text=three), schedule)


def test_the_tables_say_what_pipesim_compare_says() -> None:
    one = simulate(build("1f1b", 2, 4)).trace()
    other = simulate(build("gpipe", 2, 4)).trace()
    tables = comparison_tables(compare_traces(one, one))
    assert [row["error"] for row in tables["summary"]] == ["+0.0%", "+0.0%", "+0.0 pts", "+0.0%"]
    assert list(tables) == ["summary", "per rank", "per stage", "per kind"]
    assert order_lines(compare_traces(one, one)) == [
        "action order: the same on every rank (versions included)"
    ]
    assert order_lines(compare_traces(one, other))[0].startswith("action order: not compared")
    (row,) = metrics_rows({"1f1b": compare_traces(one, one).a}, workload=False)
    assert row["microbatches/s"] == pytest.approx(4 / 15, abs=1e-4) and "tokens/s" not in row

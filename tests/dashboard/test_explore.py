"""The Explore page through Streamlit's AppTest: set controls (or the URL), check what is shown.

.venv/bin/python -m pytest -q tests/dashboard/test_explore.py
"""

from __future__ import annotations

from pathlib import Path

from tests.dashboard.conftest import charts

EXAMPLE_COSTS = Path(__file__).resolve().parents[2] / "simulator" / "presets" / "example.toml"


def _table(test) -> list[dict]:
    return test.dataframe[0].value.to_dict("records")


def test_the_default_view_is_1f1b_with_its_closed_form_and_changing_p_redraws_it(app) -> None:
    test = app()
    (row,) = _table(test)
    # unit costs: step (m + P - 1)(t_F + t_B) = 11 x 3 s, bubble (P - 1)/(m + P - 1) = 3/11
    assert (row["schedule"], row["step time"], row["bubble fraction"]) == ("1f1b", "33 s", 0.2727)
    timeline = charts(test)["timeline-1f1b"]
    assert timeline["layout"]["meta"]["rows"] == [[f"rank {rank}" for rank in range(4)]]
    forwards = next(bar for bar in timeline["data"] if bar["name"].startswith("F "))
    assert len(forwards["y"]) == 4 * 8 and sorted(set(forwards["text"])) == [str(j) for j in range(8)]
    assert dict(test.query_params) == {}  # defaults stay out of the URL

    test.number_input(key="explore.p").set_value(8).run()
    assert _table(test)[0]["step time"] == "45 s"  # (8 + 8 - 1) x 3
    assert charts(test)["timeline-1f1b"]["layout"]["meta"]["rows"] == [[f"rank {r}" for r in range(8)]]
    assert test.query_params["p"] == "8"


def test_the_url_sets_the_controls_and_presets_bring_memory_and_its_capacity(app) -> None:
    test = app(schedules="gpipe,2bw", p="4", m="8", costs="presets", model="gpt2-small", device="h100-sxm")
    assert test.multiselect(key="explore.schedules").value == ["gpipe", "2bw"]
    assert [row["schedule"] for row in _table(test)] == ["gpipe", "2bw"]
    shown = charts(test)
    ranges = [shown[f"timeline-{name}"]["layout"]["xaxis"]["range"] for name in ("gpipe", "2bw")]
    assert ranges[0] == ranges[1]  # several schedules share one time scale
    memory = shown["memory"]
    assert any("capacity 74.5 GiB" in note.get("text", "") for note in memory["layout"]["annotations"])
    assert {row["delay (max)"] for row in _table(test)} == {0, 1}  # 2BW: one-step delay
    labels = [button.label for button in test.get("download_button")]
    assert labels.count("PyTorch schedule CSV") == 2 and labels.count("Chrome / Perfetto trace") == 2


def test_a_malformed_cost_file_is_one_error_and_a_good_one_simulates(app) -> None:
    test = app(schedules="1f1b,gpipe", costs="file")
    test.file_uploader(key="explore.upload").upload("broken.toml", b"[defaults\nforward = ").run()
    assert len(test.error) == 1 and test.error[0].value.startswith("broken.toml: not valid TOML")
    assert not test.get("plotly_chart") and test.title[0].value == "Explore"
    example = ("example.toml", EXAMPLE_COSTS.read_bytes(), "application/toml")
    test.file_uploader(key="explore.upload").set_value(example).run()
    assert not test.error and [row["schedule"] for row in _table(test)] == ["1f1b", "gpipe"]


def test_explicit_values_derive_the_backward_and_sizes_that_do_not_fit_are_named(app) -> None:
    test = app(costs="values", tf="2ms")
    assert any("t_B = 2 x t_F = 4ms" in caption.value for caption in test.caption)
    assert _table(test)[0]["step time"] == "66 ms"  # 11 x (2 + 4) ms
    test = app(schedules="1f1b,2bw", p="8", m="4")
    assert [error.value for error in test.error] == [
        "2bw: 2bw needs microbatches m >= stages P, got m = 4 < P = 8"
    ]
    assert [row["schedule"] for row in _table(test)] == ["1f1b"]


def test_an_uploaded_schedule_file_simulates_beside_the_named_ones_and_a_bad_one_is_one_error(app) -> None:
    from schedules import build
    from schedules.csv_io import export_csv

    test = app(schedules="1f1b")
    text = export_csv(build("dualpipev", 4, 8)).text.encode()
    test.file_uploader(key="explore.schedule_upload").upload("dpv.csv", text).run()
    assert not test.error and [row["schedule"] for row in _table(test)] == ["dpv.csv", "1f1b"]
    assert _table(test)[0]["step time"] == "24.5 s"  # dualpipev's exact analytics, unit costs
    layout = [caption.value for caption in test.caption if caption.value.startswith("dpv.csv:")]
    assert layout and "placed in a V" in layout[0] and "overlapped pairs" in layout[0]
    test.file_uploader(key="explore.schedule_upload").upload("bad.csv", b"0F0,0B1\n").run()
    assert [error.value for error in test.error] == [
        "bad.csv: row 1, cell 2: B of stage 0, microbatch 1 comes before its F"
    ]
    assert [row["schedule"] for row in _table(test)] == ["1f1b"]

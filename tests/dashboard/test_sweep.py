"""The Sweep page through AppTest: the grid from the URL, heatmaps and lines, the memory budget.

.venv/bin/python -m pytest -q tests/dashboard/test_sweep.py
"""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import charts


def test_a_heatmap_per_schedule_with_the_points_a_schedule_cannot_take(app) -> None:
    test = app("sweep", schedules="1f1b,2bw", ps="2,4", ms="2,8", costs="unit", metric="bubble_fraction")
    heatmaps = charts(test)["sweep-chart"]["data"]
    assert [heatmap["type"] for heatmap in heatmaps] == ["heatmap", "heatmap"]
    gpipe_like = heatmaps[0]["z"]  # 1f1b, unit costs: (P - 1) / (m + P - 1)
    assert gpipe_like[0][0] == pytest.approx(1 / 3) and gpipe_like[1][1] == pytest.approx(3 / 11)
    assert heatmaps[1]["z"][1][0] is None and heatmaps[1]["text"][1][0] == "x"  # 2bw: m = 2 < P = 4
    assert test.expander[0].label == "1 point(s) the schedules cannot take"
    assert any("microbatches/s" in caption.value for caption in test.caption)


def test_peak_memory_lines_against_a_budget(app) -> None:
    test = app("sweep", schedules="gpipe,1f1b", ps="2,4", ms="8,32", model="gpt2-small", budget="2")
    test.selectbox(key="sweep.metric").set_value("peak_memory_max").run()
    test.radio(key="sweep.view").set_value("lines").run()
    figure = charts(test)["sweep-chart"]
    assert [shape["y0"] for shape in figure["layout"]["shapes"]] == [2.0, 2.0]  # the budget, GiB, per panel
    peaks = {(line["name"], line["xaxis"]): line["y"] for line in figure["data"]}
    assert peaks[("gpipe", "x")][1] > peaks[("1f1b", "x")][1]  # GPipe stashes all m activations
    over = [caption.value for caption in test.caption if caption.value.startswith("memory budget")]
    assert over and "point(s) above it" in over[0]
    assert test.query_params["metric"] == "peak_memory_max" and test.query_params["view"] == "lines"

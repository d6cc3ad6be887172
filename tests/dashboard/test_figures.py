"""The figure functions without Streamlit: trace or metrics in, plotly figure out.

.venv/bin/python -m pytest -q tests/dashboard/test_figures.py
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from dashboard.figures.charts import decimated, memory_figure, staleness_figure, utilization_figure
from dashboard.figures.strips import busy_per_bin
from dashboard.figures.style import GIB, KIND_COLORS, time_unit
from dashboard.figures.sweep import over_budget, si
from dashboard.figures.timeline import comparison_timeline, timeline_figure
from dashboard.figures.training import training_figure
from schedules import build
from simulator import CostModel, simulate
from simulator.request import CostRequest
from traces.compare import KIND_GROUPS, kind_group
from traces.schema import Trace

LINKED = CostModel.uniform(forward=1.0, backward=2.0, latency=0.25)


def simulated(name: str, ranks: int, microbatches: int, costs: CostModel = LINKED, steps: int = 1) -> Trace:
    return simulate(build(name, ranks, microbatches, steps=steps), costs).trace()


def _bars(figure) -> dict[str, object]:
    return {bar.legendgroup: bar for bar in figure.data if bar.type == "bar"}


def test_every_action_is_a_bar_at_its_times_in_its_kinds_colour() -> None:
    trace = simulated("1f1b", 3, 4)
    figure = timeline_figure(trace)
    drawn = [event for event in trace.events if event.end > event.start]
    bars = _bars(figure)
    assert sum(len(bar.y) for bar in bars.values()) == len(drawn) == figure.layout.meta["bars"]
    assert {kind: bar.marker.color for kind, bar in bars.items()} == {
        kind: KIND_COLORS[kind] for kind in bars
    }
    assert set(bars) == {"F", "B", "SEND", "RECV"}  # OPT costs nothing here: a tick, not a bar
    first = next(event for event in drawn if event.action.kind.value == "B")
    backward = bars["B"]
    index = [hover[0] for hover in backward.customdata].index(str(first.action))
    assert backward.base[index] == first.start and backward.x[index] == first.end - first.start
    assert backward.text[index] == str(first.action.microbatch)
    assert list(backward.customdata[index][1:4]) == [0, first.action.microbatch, first.action.version]
    assert figure.layout.meta["rows"] == [[f"rank {r}{s}" for r in range(3) for s in ("", " send")]]
    ticks = [item for item in figure.data if item.type == "scatter"]
    assert len(ticks) == 1 and len(ticks[0].x) == 3  # one zero-cost OPT per rank


def test_without_sends_the_rows_are_the_ranks() -> None:
    figure = timeline_figure(simulated("gpipe", 2, 3), show_sends=False)
    assert "SEND" not in _bars(figure) and figure.layout.meta["rows"] == [["rank 0", "rank 1"]]


def test_a_big_timeline_becomes_strips_of_bins_whose_busy_time_is_exact() -> None:
    trace = simulated("zb-h1", 4, 8)
    figure = timeline_figure(trace, max_bars=50)
    heatmap = next(item for item in figure.data if item.type == "heatmap")
    assert figure.layout.meta["aggregated"] and np.shape(heatmap.z)[0] == 4
    assert (
        "shown as" in figure.layout.annotations[0].text
        and "sends not drawn" in figure.layout.annotations[0].text
    )
    # the busy time per bin adds up to every rank's time per kind, bins that cut actions included
    edges = np.linspace(0.0, trace.makespan, 37)
    busy = busy_per_bin(list(trace.events), 4, edges)
    totals: dict[tuple[int, str], float] = defaultdict(float)
    for event in trace.events:
        if event.stream != "send":
            totals[(event.rank, kind_group(event.action))] += event.end - event.start
    for (rank, kind), total in totals.items():
        assert busy[rank, KIND_GROUPS.index(kind)].sum() == pytest.approx(total)


def test_a_bin_inside_one_action_takes_its_colour() -> None:
    trace = simulated("1f1b", 2, 2, costs=CostModel.uniform(forward=1.0, backward=2.0))
    figure = timeline_figure(trace, max_bars=1)
    heatmap = next(item for item in figure.data if item.type == "heatmap")
    unit = time_unit(trace.makespan)
    backward = next(event for event in trace.events if event.action.kind.value == "B" and event.rank == 1)
    middle = (backward.start + backward.end) / 2 * unit.scale
    column = int(np.argmin(np.abs(np.asarray(heatmap.x) - middle)))
    assert heatmap.z[1][column] == KIND_GROUPS.index("B")


def test_two_traces_stack_on_one_time_axis_or_overlay_in_halves() -> None:
    a, b = simulated("1f1b", 2, 4), simulated("gpipe", 2, 4)
    stacked = comparison_timeline(a, b, labels=("one", "two"))
    assert stacked.layout.xaxis2.matches is None and stacked.layout.xaxis.matches == "x2"
    assert [title.text for title in stacked.layout.annotations[:2]] == ["one", "two"]
    overlaid = comparison_timeline(a, b, labels=("one", "two"), mode="overlaid")
    assert {bar.offset for bar in overlaid.data if bar.type == "bar"} == {-0.44, 0.02}
    assert all("two" in bar.hovertemplate for bar in overlaid.data if bar.type == "bar" and bar.offset > 0)
    crowded = comparison_timeline(a, b, mode="overlaid", max_bars=20)
    assert crowded.layout.annotations[-1].text.startswith("too many actions to overlay: stacked instead")


def test_utilization_and_bubble_stack_to_one_per_rank_and_schedule() -> None:
    metrics = {name: simulate(build(name, 4, 8)).metrics() for name in ("gpipe", "zb-h1")}
    figure = utilization_figure(metrics)
    assert len(figure.data) == 4
    for busy, idle in zip(figure.data[::2], figure.data[1::2], strict=True):
        assert list(idle.base) == list(busy.y)
        assert [b + i for b, i in zip(busy.y, idle.y, strict=True)] == pytest.approx([1.0] * 4)


def test_memory_marks_each_ranks_peak_and_the_capacity() -> None:
    schedule = build("1f1b", 4, 8)
    costs = CostRequest(model="gpt2-small", device="h100-sxm").costs_for(schedule)
    simulation = simulate(schedule, costs)
    figure = memory_figure({"1f1b": simulation.trace()}, capacity=costs.memory_capacity)
    peaks = [item.y[0] for item in figure.data if item.name.endswith("peak")]
    assert peaks == pytest.approx([peak / GIB for peak in simulation.metrics().peak_memory])
    assert figure.layout.shapes[0].y0 == pytest.approx(costs.memory_capacity / GIB)
    unsized = memory_figure({"1f1b": simulate(schedule).trace()})
    assert not unsized.layout.meta["sized"] and "no memory sizes" in unsized.layout.annotations[-1].text


def test_long_memory_series_keep_their_peaks() -> None:
    points = [(float(i), (i * 7919) % 1000) for i in range(10_000)]
    times, held = decimated(points)
    assert len(times) <= 1500 and held.max() == 999 and list(times) == sorted(times)


def test_staleness_bars_are_the_delay_and_versions_per_stage() -> None:
    metrics = simulate(build("pipedream", 4, 8, steps=2)).metrics()
    delay, versions = staleness_figure({"pipedream": metrics}).data
    assert list(delay.y) == metrics.delay == [3, 2, 1, 0]
    assert list(versions.y) == metrics.weight_versions


def test_training_curves_skip_missing_validation_points() -> None:
    rows = [
        {"step": 0, "loss": 5.0, "time": 0.1, "tokens_per_s": 100.0},
        {"step": 1, "loss": 4.0, "time": 0.2, "tokens_per_s": 110.0, "val_loss": 4.5},
    ]
    figure = training_figure({"a": rows}, x="time")
    curves = {curve.name: curve for curve in figure.data}
    assert list(curves["a"].x) == [0.1, 0.2] and list(curves["a validation"].y) == [4.5]
    assert list(curves["a tokens/s"].y) == [100.0, 110.0]


def test_sweep_labels_and_the_budget() -> None:
    assert [si(x) for x in (2.99e6, 45_100, 0.2734)] == ["2.99M", "45.1k", "0.273"]
    rows = [
        {"schedule": "gpipe", "peak_memory_max": 3 * GIB, "error": ""},
        {"schedule": "1f1b", "peak_memory_max": GIB, "error": ""},
        {"schedule": "2bw", "peak_memory_max": "", "error": "2bw needs m >= P"},
    ]
    assert [row["schedule"] for row in over_budget(rows, 2 * GIB)] == ["gpipe"]

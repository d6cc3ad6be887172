"""Sweep: throughput, bubble or peak memory against P and m for chosen schedules (the simulator's sweep).

    pipesim dashboard          # then /sweep?schedules=1f1b,2bw&ps=4,8&ms=8,16,32&metric=peak_memory_max

Every point is simulator.sweep.run_point, cached: changing the grid simulates only the new points, with
a progress bar. Heatmaps (a panel per schedule) or lines (a panel per P), a memory-budget line, the CSV
of `pipesim sweep` as a download.
"""

from __future__ import annotations

import streamlit as st

from dashboard import loaders
from dashboard.figures.style import GIB
from dashboard.figures.sweep import METRICS, over_budget, sweep_heatmap, sweep_lines
from dashboard.inputs import COST_SOURCES, CostChoice
from dashboard.params import Param
from dashboard.tables import MISSING
from dashboard.widgets import key, publish, restore, value
from schedules.registry import SCHEDULES
from simulator.presets import DEVICES, MODELS
from simulator.sweep import grid, rows_to_csv

PAGE = "sweep"
SOURCES = ("unit", "presets")  # a cost file belongs to `pipesim sweep --costs`
RANKS = (1, 2, 4, 8, 16, 32, 64)
MICROBATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
VIEWS = ("heatmap", "lines")
PARAMS = (
    Param(key="schedules", default=["1f1b", "zb-h1", "2bw"], kind="strs", choices=tuple(SCHEDULES)),
    Param(key="ps", default=[2, 4, 8], kind="ints", choices=RANKS),
    Param(key="ms", default=[8, 16, 32], kind="ints", choices=MICROBATCHES),
    Param(key="costs", default="presets", choices=SOURCES),
    Param(key="model", default="gpt2-small", choices=tuple(MODELS)),
    Param(key="device", default="h100-sxm", choices=tuple(DEVICES)),
    Param(key="metric", default="tokens_per_s", choices=tuple(METRICS)),
    Param(key="view", default="heatmap", choices=VIEWS),
    Param(key="budget", default=0.0, kind="float", minimum=0.0),
)


def render() -> None:
    restore(PAGE, PARAMS)
    st.title("Sweep")
    st.caption("The simulator over a grid of schedules, P and m: what fits, and what pays.")
    choice = _controls()
    publish(PAGE, PARAMS)
    schedules = value(PAGE, "schedules")
    ranks, microbatches = sorted(value(PAGE, "ps")), sorted(value(PAGE, "ms"))
    if not (schedules and ranks and microbatches):
        st.info("Pick at least one schedule, one P and one m.")
        return
    rows = _sweep(schedules, ranks, microbatches, choice)
    _show(rows, choice)


def _controls() -> CostChoice:
    with st.sidebar:
        st.multiselect("Schedules", options=list(SCHEDULES), key=key(PAGE, "schedules"))
        st.multiselect("P (stages)", options=RANKS, key=key(PAGE, "ps"))
        st.multiselect("m (microbatches)", options=MICROBATCHES, key=key(PAGE, "ms"))
        st.radio("Costs", options=SOURCES, format_func=COST_SOURCES.get, key=key(PAGE, "costs"))
        if value(PAGE, "costs") == "presets":
            st.selectbox("Model", options=list(MODELS), key=key(PAGE, "model"))
            st.selectbox("Device", options=list(DEVICES), key=key(PAGE, "device"))
        st.selectbox("Metric", options=list(METRICS), format_func=METRICS.get, key=key(PAGE, "metric"))
        st.radio("View", options=VIEWS, key=key(PAGE, "view"), horizontal=True)
        st.number_input(
            "Memory budget (GiB; 0: the device's)", min_value=0.0, step=8.0, key=key(PAGE, "budget")
        )
    if value(PAGE, "costs") == "presets":
        return CostChoice(source="presets", model=value(PAGE, "model"), device=value(PAGE, "device"))
    return CostChoice()


def _sweep(schedules: list[str], ranks: list[int], microbatches: list[int], choice: CostChoice) -> list[dict]:
    """Every point of the grid, in grid order, with a progress bar while uncached points run."""
    points = grid(schedules, ranks=ranks, microbatches=microbatches, requests=[choice.request()])
    progress = st.progress(0.0, text=f"simulating {len(points)} points")
    rows = []
    for done, point in enumerate(points, start=1):
        rows.append(loaders.sweep_row(point.schedule, point.ranks, point.microbatches, choice))
        progress.progress(done / len(points), text=f"simulated {done} of {len(points)} points")
    progress.empty()
    return rows


def _budget(choice: CostChoice) -> float | None:
    """Bytes: the budget asked for, else the device's memory (none for unit costs)."""
    if value(PAGE, "budget"):
        return value(PAGE, "budget") * GIB
    return DEVICES[choice.device]().memory if choice.source == "presets" else None


def _show(rows: list[dict], choice: CostChoice) -> None:
    metric, budget = value(PAGE, "metric"), _budget(choice)
    draw = sweep_heatmap if value(PAGE, "view") == "heatmap" else sweep_lines
    st.plotly_chart(draw(rows, metric=metric, budget=budget), key="sweep-chart", width="stretch")
    if choice.source == "unit":
        st.caption(
            "Unit costs know no workload or sizes: throughput is in microbatches/s, memory is not sized."
        )
    if budget:
        over = over_budget(rows, budget)
        where = ", ".join(f"{row['schedule']} P={row['ranks']} m={row['microbatches']}" for row in over[:8])
        more = f" and {len(over) - 8} more" if len(over) > 8 else ""
        st.caption(
            f"memory budget {budget / GIB:.1f} GiB: {len(over)} point(s) above it"
            + (f" ({where}{more})" if over else "")
        )
    failed = [row for row in rows if row.get("error")]
    if failed:
        with st.expander(f"{len(failed)} point(s) the schedules cannot take"):
            st.dataframe(
                [{key: row[key] for key in ("schedule", "ranks", "microbatches", "error")} for row in failed],
                hide_index=True,
                placeholder=MISSING,
            )
    st.download_button(
        "sweep.csv (as `pipesim sweep --out`)",
        data=rows_to_csv(rows),
        file_name="sweep.csv",
        mime="text/csv",
        on_click="ignore",
    )


if __name__ == "__main__":
    render()

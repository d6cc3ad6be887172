"""Explore: simulate one or more schedules and look at them (timeline, utilization, memory, staleness).

    pipesim dashboard          # then /explore?schedules=1f1b,zb-h1&p=8&m=32&costs=presets

Controls in the sidebar (schedules, P, m, steps, chunks, the cost source), every one of them in the
URL, and a schedule file to upload (PyTorch's CSV, simulated at its own P and m beside the named
schedules; an upload cannot travel in the URL); the page shows a metrics table, a timeline per
schedule on one time scale, utilization and bubble per rank, memory per rank over time, delay and weight
versions per stage, and downloads.
"""

from __future__ import annotations

import json
from collections import defaultdict

import streamlit as st

from dashboard import loaders
from dashboard.inputs import COST_SOURCES, VALUE_FIELDS, CostChoice
from dashboard.loaders import SimRequest
from dashboard.params import Param
from dashboard.tables import MISSING, metrics_rows
from dashboard.widgets import key, publish, restore, value
from schedules.errors import UserError
from schedules.imported import layout_line, schedule_from_text
from schedules.registry import SCHEDULES
from simulator.costfile import loads_costs
from simulator.presets import DEVICES, MODELS
from traces.chrome import to_chrome
from traces.io import dumps_trace

PAGE = "explore"
SCHEDULE_UPLOAD = "explore.schedule_upload"
# CostChoice.values keyword -> the URL's name (the command's flag where it has one)
VALUE_KEYS = {
    "forward": "tf",
    "backward": "tb",
    "backward_weight": "tw",
    "optimizer_step": "topt",
    "latency": "latency",
    "bandwidth": "bandwidth",
    "activation_bytes": "act",
}
PARAMS = (
    Param(key="schedules", default=["1f1b"], kind="strs", choices=tuple(SCHEDULES)),
    Param(key="p", default=4, kind="int", minimum=1, maximum=64),
    Param(key="m", default=8, kind="int", minimum=1, maximum=1024),
    Param(key="steps", default=0, kind="int", minimum=0, maximum=64),
    Param(key="chunks", default=2, kind="int", minimum=1, maximum=8),
    Param(key="costs", default="unit", choices=tuple(COST_SOURCES)),
    *(Param(key=name, default="") for name in VALUE_KEYS.values()),
    Param(key="model", default="gpt2-small", choices=tuple(MODELS)),
    Param(key="device", default="h100-sxm", choices=tuple(DEVICES)),
    Param(key="mbs", default=0, kind="int", minimum=0, maximum=4096),
    Param(key="sends", default=True, kind="bool"),
)


def render() -> None:
    restore(PAGE, PARAMS)
    st.title("Explore")
    st.caption(
        "Simulate schedules with the SimPy model and compare them: pick them and their costs on the left."
    )
    choice = _controls()
    publish(PAGE, PARAMS)
    if choice is None:
        return
    requests = _requests(choice)
    if not requests:
        st.info("Pick at least one schedule that these sizes allow.")
        return
    _show(requests)


def _controls() -> CostChoice | None:
    """The sidebar; returns the cost source (None after showing why it is unusable)."""
    with st.sidebar:
        st.multiselect("Schedules", options=list(SCHEDULES), key=key(PAGE, "schedules"))
        st.file_uploader(
            "Schedule file (PyTorch CSV)",
            type=["csv"],
            key=SCHEDULE_UPLOAD,
            help="torch.distributed.pipelining's schedule CSV, old or new notation, with or without sends "
            "and receives: simulated at its own P and m, beside the schedules above",
        )
        left, right = st.columns(2)
        left.number_input("P (stages)", min_value=1, max_value=64, step=1, key=key(PAGE, "p"))
        right.number_input("m (microbatches)", min_value=1, max_value=1024, step=1, key=key(PAGE, "m"))
        left.number_input(
            "steps",
            min_value=0,
            max_value=64,
            key=key(PAGE, "steps"),
            help="0: one step for synchronous schedules, four for asynchronous ones (as the commands do)",
        )
        right.number_input(
            "chunks", min_value=1, max_value=8, key=key(PAGE, "chunks"), help="interleaved only"
        )
        st.radio("Costs", options=list(COST_SOURCES), format_func=COST_SOURCES.get, key=key(PAGE, "costs"))
        choice = _cost_choice()
        st.toggle("Show sends", key=key(PAGE, "sends"), help="a row per rank for its sends (small timelines)")
    return choice


def _cost_choice() -> CostChoice | None:
    source = value(PAGE, "costs")
    if source == "values":
        for name, label in VALUE_FIELDS.items():
            st.text_input(label, key=key(PAGE, VALUE_KEYS[name]), placeholder=_placeholder(name))
        values = tuple((name, value(PAGE, VALUE_KEYS[name])) for name in VALUE_FIELDS)
        return CostChoice(source="values", values=values)
    if source == "presets":
        st.selectbox("Model", options=list(MODELS), key=key(PAGE, "model"))
        st.selectbox("Device", options=list(DEVICES), key=key(PAGE, "device"))
        st.number_input("Samples per microbatch (0: the preset's)", min_value=0, key=key(PAGE, "mbs"))
        size = value(PAGE, "mbs") or None
        return CostChoice(
            source="presets", model=value(PAGE, "model"), device=value(PAGE, "device"), microbatch_size=size
        )
    if source == "file":
        upload = st.file_uploader("Cost file (TOML, docs/cost-model.md)", type=["toml"], key="explore.upload")
        if upload is None:
            st.info("Upload a cost file: an uploaded file cannot travel in the URL.")
            return None
        text = upload.getvalue().decode("utf-8", errors="replace")
        return CostChoice(source="file", file_name=upload.name, file_text=text)
    return CostChoice()


def _placeholder(name: str) -> str:
    return {"bandwidth": "e.g. 25GB/s", "activation_bytes": "e.g. 16MiB", "latency": "e.g. 10us"}.get(
        name, "e.g. 2ms"
    )


def _requests(choice: CostChoice) -> list[SimRequest]:
    """The schedules that simulate; one error per distinct problem (a bad cost file is one error, not
    one per schedule)."""
    if choice.source == "file":
        try:
            loads_costs(choice.file_text, source=choice.file_name)
        except UserError as error:
            st.error(str(error))
            return []
    requests, problems = [], defaultdict(list)
    uploaded = _uploaded_schedule(choice)
    if uploaded is not None:
        requests.append(uploaded)
    for name in value(PAGE, "schedules"):
        request = SimRequest(
            schedule=name,
            ranks=int(value(PAGE, "p")),
            microbatches=int(value(PAGE, "m")),
            steps=int(value(PAGE, "steps")) or None,
            chunks=int(value(PAGE, "chunks")) if SCHEDULES[name].uses_chunks else None,
            costs=choice,
        )
        try:
            with st.spinner(f"simulating {name}"):
                loaders.simulated(request)
        except UserError as error:
            problems[str(error)].append(name)
            continue
        requests.append(request)
    for message, names in problems.items():
        st.error(f"{', '.join(names)}: {message}")
    for note in choice.notes():
        st.caption(note)
    return requests


def _uploaded_schedule(choice: CostChoice) -> SimRequest | None:
    """The uploaded schedule file as a request (None, with its one-line error shown, if it cannot run);
    its layout, read from the file, as a caption."""
    upload = st.session_state.get(SCHEDULE_UPLOAD)
    if upload is None:
        return None
    text = upload.getvalue().decode("utf-8", errors="replace")
    try:
        schedule = schedule_from_text(text, name=upload.name, steps=int(value(PAGE, "steps")) or 1)
        request = SimRequest(
            schedule=upload.name,
            ranks=schedule.ranks,
            microbatches=schedule.microbatches,
            steps=schedule.steps,
            chunks=schedule.chunks,
            costs=choice,
            csv=text,
        )
        with st.spinner(f"simulating {upload.name}"):
            loaders.simulated(request)
    except UserError as error:
        st.error(str(error))
        return None
    st.caption(layout_line(schedule, upload.name))
    return request


def _show(requests: list[SimRequest]) -> None:
    metrics = {request.schedule: loaders.simulated_metrics(request) for request in requests}
    workload = requests[0].costs.source in ("presets", "file")
    st.dataframe(
        metrics_rows(metrics, workload=workload),
        hide_index=True,
        placeholder=MISSING,
        width="stretch",
        key="metrics",
    )
    st.subheader("Timeline")
    x_max = max(metric.makespan for metric in metrics.values()) if len(requests) > 1 else None
    for request in requests:
        figure = loaders.timeline(request, show_sends=bool(value(PAGE, "sends")), x_max=x_max)
        st.plotly_chart(figure, key=f"timeline-{request.schedule}", width="stretch")
    utilization, memory, staleness = loaders.explore_charts(tuple(requests))
    left, right = st.columns(2)
    left.subheader("Utilization and bubble per rank")
    left.plotly_chart(utilization, key="utilization", width="stretch")
    right.subheader("Delay and weight versions per stage")
    right.plotly_chart(staleness, key="staleness", width="stretch")
    st.subheader("Memory per rank over time")
    if memory.layout.meta["sized"]:
        st.plotly_chart(memory, key="memory", width="stretch")
    else:
        st.caption(
            "These costs size no memory (unit and explicit costs do not): choose presets or a cost file."
        )
    _downloads(requests)


def _downloads(requests: list[SimRequest]) -> None:
    st.subheader("Downloads")
    for request in requests:
        name = request.schedule
        trace = loaders.simulated(request)
        columns = st.columns(4)
        columns[0].markdown(f"**{name}**")
        columns[1].download_button(
            "trace (pipesim JSON)",
            data=lambda trace=trace: dumps_trace(trace),
            file_name=f"{name}.trace.json",
            mime="application/json",
            key=f"download-trace-{name}",
            on_click="ignore",  # a download changes nothing: no rerun (which would renew every link)
        )
        columns[2].download_button(
            "Chrome / Perfetto trace",
            data=lambda trace=trace: json.dumps(to_chrome(trace)),
            file_name=f"{name}.chrome.json",
            mime="application/json",
            key=f"download-chrome-{name}",
            on_click="ignore",
        )
        columns[3].download_button(
            "PyTorch schedule CSV",
            data=lambda request=request: loaders.csv_text(request),
            file_name=f"{name}.csv",
            mime="text/csv",
            key=f"download-csv-{name}",
            on_click="ignore",
            help="the first step's compute actions, as `pipesim schedules export` writes them "
            "(PyTorch's CSV has no optimizer step and no weight version)",
        )


if __name__ == "__main__":
    render()

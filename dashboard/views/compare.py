"""Compare: two traces (predicted or measured) on one time axis, `pipesim compare`'s tables, and a
calibration of the measured one with its re-prediction beside it.

    pipesim dashboard --runs runs      # then /compare?a=1f1b/trace.json&b=predicted.json

A and B come from the runs folder (run folders' trace.json and other trace files), from the project's
recordings (traces/recorded/) or from an upload. Errors are B against A, as in `pipesim compare`.
Calibrating writes nothing: the cost file and the re-predicted trace are downloads.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import traces
from dashboard import loaders
from dashboard.loaders import TraceRef
from dashboard.params import Param
from dashboard.rundirs import trace_files
from dashboard.sidebar import runs_folder
from dashboard.tables import MISSING, comparison_tables, order_lines
from dashboard.widgets import key, publish, restore, value
from schedules.errors import UserError
from traces.compare import Comparison
from traces.io import dumps_trace
from traces.schema import Trace

PAGE = "compare"
UPLOAD = "(upload a file)"
RECORDED = Path(traces.__file__).parent / "recorded"  # the project's recordings (measured, predicted)
MODES = ("stacked", "overlaid")
PARAMS = (
    Param(key="a", default=""),
    Param(key="b", default=""),
    Param(key="mode", default="stacked", choices=MODES),
    Param(key="sends", default=False, kind="bool"),
)


def render() -> None:
    restore(PAGE, PARAMS)
    st.title("Compare")
    st.caption("Two traces, predicted or measured, side by side: B's error against A, as `pipesim compare`.")
    files = trace_files(runs_folder(), RECORDED)
    refs = _controls(files)
    publish(PAGE, PARAMS)
    if None in refs:
        where = "" if files else f" (no traces under {runs_folder()} or {RECORDED} to pick from)"
        st.info(f"Upload the trace{'s' if refs == [None, None] else ''} in the sidebar{where}.")
    loaded = [_load(ref) for ref in refs]
    if None in loaded:
        return
    a, b = refs
    comparison = loaders.comparison(a, b)
    _verdict(comparison)
    mode, sends = value(PAGE, "mode"), bool(value(PAGE, "sends"))
    figure = loaders.compared_timelines(a, b, mode=mode, show_sends=sends)
    st.plotly_chart(figure, key="compare-timeline", width="stretch")
    _tables(comparison)
    _calibration(b if loaded[1].source == "measured" and loaded[0].source != "measured" else a)


def _controls(files: dict[str, Path]) -> list[TraceRef | None]:
    options = [*files, UPLOAD]
    defaults = _defaults(list(files))
    refs = []
    with st.sidebar:
        for name, title in (("a", "Trace A (the reference, usually measured)"), ("b", "Trace B")):
            widget = key(PAGE, name)
            if st.session_state.get(widget) not in options:
                st.session_state[widget] = defaults[name]
            choice = st.selectbox(title, options=options, key=widget)
            refs.append(_ref(choice, files, name))
        st.radio("Timelines", options=MODES, key=key(PAGE, "mode"), horizontal=True)
        st.toggle("Show sends", key=key(PAGE, "sends"))
    return refs


def _defaults(labels: list[str]) -> dict[str, str]:
    """A recording's measured and predicted traces if there is one, else the first two traces."""
    measured = next((label for label in labels if label.endswith("/measured.json")), None)
    if measured is not None:
        predicted = measured.replace("/measured.json", "/predicted.json")
        return {"a": measured, "b": predicted if predicted in labels else UPLOAD}
    return {"a": labels[0] if labels else UPLOAD, "b": labels[1] if len(labels) > 1 else UPLOAD}


def _ref(choice: str, files: dict[str, Path], name: str) -> TraceRef | None:
    if choice != UPLOAD:
        return loaders.ref_for_file(files[choice], choice)
    upload = st.file_uploader(
        f"Trace {name.upper()} (pipesim JSON, e.g. a run folder's trace.json)",
        type=["json"],
        key=f"compare.upload.{name}",
    )
    return None if upload is None else TraceRef(label=upload.name, data=upload.getvalue())


def _load(ref: TraceRef | None) -> Trace | None:
    if ref is None:
        return None
    try:
        return loaders.loaded(ref)
    except UserError as error:
        st.error(str(error))
        return None


def _verdict(comparison: Comparison) -> None:
    for name, label, metrics in zip("AB", comparison.labels, (comparison.a, comparison.b), strict=True):
        steps = f"{metrics.steps} step" + ("s" if metrics.steps != 1 else "")
        st.markdown(
            f"**{name}**: `{label}` ({metrics.source}, {metrics.schedule}, P = {metrics.ranks}, "
            f"m = {metrics.microbatches}, {steps})"
        )
    (st.success if comparison.agrees() else st.warning)(f"verdict: {comparison.verdict()}")


def _tables(comparison: Comparison) -> None:
    tables = comparison_tables(comparison)
    tabs = st.tabs([*tables, "action order"])
    for tab, (name, rows) in zip(tabs, tables.items(), strict=False):
        tab.dataframe(
            rows, hide_index=True, placeholder=MISSING, width="stretch", key=f"compare-table-{name}"
        )
    tabs[-1].text("\n".join(order_lines(comparison)))


def _calibration(measured: TraceRef) -> None:
    """Calibrate on A, or on B when only B is measured."""
    st.subheader("Calibrate")
    st.caption(
        f"Fit a cost file from `{measured.label}` and simulate the same schedule with it "
        "(as `pipesim calibrate --report`); nothing is written, the results are downloads."
    )
    state = key(PAGE, "calibrated")
    if st.button(f"Calibrate on {measured.label}", key="compare-calibrate"):
        st.session_state[state] = measured
    if st.session_state.get(state) != measured:
        return
    try:
        with st.spinner("calibrating and re-predicting"):
            result = loaders.calibrated(measured)
    except UserError as error:
        st.error(str(error))
        return
    _verdict(result.report)
    figure = loaders.calibrated_timeline(measured)
    st.plotly_chart(figure, key="calibrated-timeline", width="stretch")
    st.dataframe(
        comparison_tables(result.report)["summary"],
        hide_index=True,
        placeholder=MISSING,
        key="calibrated-summary",
    )
    for note in result.notes:
        st.caption(f"note: {note}")
    left, right = st.columns(2)
    left.download_button(
        "cost file (calibrated.toml)",
        data=result.costs_text,
        file_name="calibrated.toml",
        key="download-costs",
        on_click="ignore",
    )
    right.download_button(
        "re-predicted trace",
        data=lambda: dumps_trace(result.prediction),
        file_name="calibrated.trace.json",
        mime="application/json",
        key="download-prediction",
        on_click="ignore",
    )


if __name__ == "__main__":
    render()

"""Cached loaders: every result the pages show, computed once per set of inputs.

    trace = simulated(SimRequest(schedule="1f1b", ranks=8, microbatches=32, costs=CostChoice()))
    figure = timeline(request, show_sends=True, x_max=None)     # st.cache_data, keyed by its inputs

Results (metrics, figures, tables, sweep rows, run folders) are cached with st.cache_data, keyed by
their inputs; a file's key includes its modification time and size, so a growing metrics.jsonl is read
again. Traces themselves are cached with st.cache_resource: they are immutable, and st.cache_data would
hand out a fresh copy (an unpickling) on every rerun, over a second for a 190,000-event trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from dashboard.figures.charts import memory_figure, staleness_figure, utilization_figure
from dashboard.figures.timeline import comparison_timeline, timeline_figure
from dashboard.inputs import CostChoice, cost_model, trace_from_bytes
from dashboard.rundirs import RunInfo, read_run
from dashboard.studies import Analysis, StudyState, analyse, grid_size, read_study, study_plots
from schedules.csv_io import export_csv
from schedules.imported import schedule_from_text
from schedules.ir import Schedule
from schedules.registry import build_with_defaults
from simulator import simulate
from simulator.calibration import calibrate_trace, repredict
from simulator.costfile import loads_costs
from simulator.sweep import SweepPoint, run_point
from traces.compare import Comparison, compare_traces
from traces.io import read_trace
from traces.metrics import Metrics, compute_metrics
from traces.schema import Trace


@dataclass(frozen=True, kw_only=True)
class SimRequest:
    """One schedule to simulate, as the Explore page's controls describe it."""

    schedule: str
    """Registry name."""
    ranks: int
    """P."""
    microbatches: int
    """m, per step."""
    steps: int | None = None
    """None: the registry's default (1 for synchronous, 4 for asynchronous schedules)."""
    chunks: int | None = None
    """None: the registry's default (2 for interleaved, else 1)."""
    costs: CostChoice
    """Where the costs come from."""
    csv: str | None = None
    """An uploaded schedule file's text (PyTorch's CSV): `schedule` is then its name, and its P, m and
    chunks are the file's (schedules.imported)."""


@dataclass(frozen=True, kw_only=True)
class TraceRef:
    """A trace the Compare page can load: a file on disk (with its stamp) or an upload (with its bytes)."""

    label: str
    """What the page calls it."""
    path: str = ""
    """The file (a trace or a run folder's trace.json); empty for an upload."""
    stamp: tuple[float, int] = (0.0, 0)
    """(mtime, size) of the file: a changed file is a new key."""
    data: bytes = b""
    """An upload's bytes."""


@st.cache_resource(max_entries=16, show_spinner=False)
def schedule_of(request: SimRequest) -> Schedule:
    """The lowered schedule (immutable; built once for the simulation and the CSV export)."""
    if request.csv is not None:
        return schedule_from_text(request.csv, name=request.schedule, steps=request.steps or 1)
    return build_with_defaults(
        request.schedule, request.ranks, request.microbatches, request.steps, request.chunks
    )


@st.cache_resource(max_entries=16, show_spinner=False)
def simulated(request: SimRequest) -> Trace:
    """The simulator's trace (ScheduleError, CostError: one line, shown by the page)."""
    schedule = schedule_of(request)
    costs = cost_model(request.costs, schedule)
    return simulate(schedule, costs, meta={"costs": request.costs.label}).trace()


@st.cache_data(max_entries=64, show_spinner=False)
def simulated_metrics(request: SimRequest) -> Metrics:
    return compute_metrics(simulated(request))


@st.cache_data(max_entries=32, show_spinner=False)
def timeline(request: SimRequest, *, show_sends: bool, x_max: float | None) -> go.Figure:
    return timeline_figure(simulated(request), title=request.schedule, show_sends=show_sends, x_max=x_max)


@st.cache_data(max_entries=16, show_spinner=False)
def explore_charts(requests: tuple[SimRequest, ...]) -> tuple[go.Figure, go.Figure, go.Figure]:
    """Utilization and bubble, memory over time, and staleness of several schedules."""
    traces = {request.schedule: simulated(request) for request in requests}
    metrics = {name: simulated_metrics(request) for name, request in zip(traces, requests, strict=True)}
    capacity = next(
        (t.meta.get("memory_capacity") for t in traces.values() if t.meta.get("memory_capacity")), None
    )
    return utilization_figure(metrics), memory_figure(traces, capacity=capacity), staleness_figure(metrics)


def csv_text(request: SimRequest) -> str:
    """PyTorch's schedule CSV of the first step (made when the download is asked for)."""
    return export_csv(schedule_of(request)).text


def ref_for_file(path: Path, label: str) -> TraceRef:
    info = path.stat()
    return TraceRef(label=label, path=str(path), stamp=(info.st_mtime, info.st_size))


@st.cache_resource(max_entries=16, show_spinner=False)
def loaded(ref: TraceRef) -> Trace:
    """The trace of a file or an upload (TraceError: one line, shown by the page)."""
    if ref.path:
        return read_trace(ref.path)
    return trace_from_bytes(ref.data, name=ref.label)


@st.cache_data(max_entries=32, show_spinner=False)
def comparison(a: TraceRef, b: TraceRef) -> Comparison:
    return compare_traces(loaded(a), loaded(b), labels=(a.label, b.label))


@st.cache_data(max_entries=32, show_spinner=False)
def compared_timelines(a: TraceRef, b: TraceRef, *, mode: str, show_sends: bool) -> go.Figure:
    return comparison_timeline(
        loaded(a), loaded(b), labels=(a.label, b.label), mode=mode, show_sends=show_sends
    )


@dataclass(frozen=True, kw_only=True)
class Calibrated:
    """A calibration of a measured trace, as `pipesim calibrate --report` makes it."""

    costs_text: str
    """The cost file (TOML) the fit wrote."""
    notes: tuple[str, ...]
    """What the fit dropped or could not tell apart."""
    prediction: Trace
    """The same schedule simulated with that cost file."""
    report: Comparison
    """The measured trace (A) against the re-prediction (B)."""


@st.cache_resource(max_entries=8, show_spinner=False)
def calibrated(ref: TraceRef) -> Calibrated:
    measured = loaded(ref)
    fit, text = calibrate_trace(measured, source=ref.label)
    prediction = repredict(measured, loads_costs(text, source="calibrated.toml"), label="calibrated.toml")
    report = compare_traces(measured, prediction, labels=(ref.label, "calibrated prediction"))
    return Calibrated(costs_text=text, notes=tuple(fit.notes), prediction=prediction, report=report)


@st.cache_data(max_entries=8, show_spinner=False)
def calibrated_timeline(ref: TraceRef) -> go.Figure:
    """The measured trace above its calibrated re-prediction."""
    labels = (ref.label, "calibrated prediction")
    return comparison_timeline(loaded(ref), calibrated(ref).prediction, labels=labels, mode="stacked")


@st.cache_data(max_entries=256, show_spinner=False)
def run_folder(path: str, root: str, stamp: tuple) -> RunInfo:
    """A run folder's config and metrics; `stamp` (rundirs.stamp) makes a grown file a new key."""
    del stamp  # only part of the key
    return read_run(Path(path), root=Path(root))


@st.cache_data(max_entries=4096, show_spinner=False)
def sweep_row(schedule: str, ranks: int, microbatches: int, costs: CostChoice) -> dict[str, Any]:
    """One point of the simulator's sweep (a row with `error` for sizes the schedule cannot take)."""
    point = SweepPoint(schedule=schedule, ranks=ranks, microbatches=microbatches, request=costs.request())
    return run_point(point)


@st.cache_data(max_entries=16, show_spinner=False)
def study_state(path: str, stamp: tuple) -> StudyState:
    """A study folder's settings, lrs, finished runs and tables; `stamp` (studies.stamp) is the key."""
    del stamp  # only part of the key
    return read_study(Path(path))


@st.cache_data(max_entries=64, show_spinner=False)
def study_size(settings_json: str) -> int | None:
    """How many runs the study's grid makes (imports the executor: torch)."""
    import json

    return grid_size(json.loads(settings_json))


@st.cache_resource(max_entries=4, show_spinner="reading the study's runs")
def study_analysis(path: str, stamp: tuple) -> Analysis:
    """Every run of a finished study, its target and step times (cache_resource: the records are read
    only, and a copy per rerun would cost as much as reading them)."""
    del stamp
    return analyse(Path(path))


@st.cache_data(max_entries=32, show_spinner="drawing the study's plots")
def study_figures(
    path: str, stamp: tuple, schedules: tuple[str, ...], variants: tuple[str, ...], depths: tuple[int, ...]
) -> dict[str, go.Figure]:
    """The three plots of `pipesim study` for the chosen schedules, optimizers and depths."""
    summary = study_state(path, stamp).summary
    analysis = study_analysis(path, stamp)
    return study_plots(analysis, summary, schedules=schedules, variants=variants, depths=depths)

"""Runs: the run folders under the runs folder, their loss, validation loss and tokens/s, several at once.

    pipesim dashboard --runs runs      # then /runs?runs=2bw,1f1b&x=time

Against step or wall-clock time; a run still in progress (no trace.json yet, metrics.jsonl growing) is
followed live: the charts refresh every few seconds. Run folders are only read.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import loaders
from dashboard.figures.training import X_AXES, training_figure
from dashboard.params import Param
from dashboard.rundirs import RunInfo, find_runs, stamp, summary
from dashboard.sidebar import runs_folder
from dashboard.tables import MISSING
from dashboard.widgets import key, publish, restore, value

PAGE = "runs"
REFRESH_SECONDS = 2.0  # how often a page with a live run reads its metrics.jsonl again
SHOWN = 6  # runs selected when the URL names none
PARAMS = (
    Param(key="runs", default=[], kind="strs"),
    Param(key="x", default="step", choices=tuple(X_AXES)),
)


def render() -> None:
    restore(PAGE, PARAMS)
    st.title("Runs")
    root = runs_folder()
    folders = {_name(folder, root): folder for folder in find_runs(root)}
    st.caption(f"Run folders under `{root}` (`pipesim run --out DIR`), read only.")
    if not folders:
        st.info(
            f"No run folders under {root}: start one with `pipesim run --out {root}/NAME`, "
            "or set the runs folder."
        )
        publish(PAGE, PARAMS)
        return
    chosen = _controls(list(folders))
    publish(PAGE, PARAMS)
    selected = [folders[name] for name in chosen]
    if not selected:
        st.info("Pick one or more runs on the left.")
        return
    if any(run.live() for run in _read(selected, root)):
        st.fragment(run_every=REFRESH_SECONDS)(_show)(selected, root, following=True)
    else:
        _show(selected, root)


def _name(folder: Path, root: Path) -> str:
    return folder.name if folder == root else folder.relative_to(root).as_posix()


def _controls(names: list[str]) -> list[str]:
    widget = key(PAGE, "runs")
    current = [name for name in st.session_state.get(widget) or [] if name in names]
    st.session_state[widget] = current or names[-SHOWN:]
    with st.sidebar:
        st.multiselect("Runs", options=names, key=widget)
        st.radio("Against", options=list(X_AXES), format_func=X_AXES.get, key=key(PAGE, "x"), horizontal=True)
    return value(PAGE, "runs")


def _read(folders: list[Path], root: Path) -> list[RunInfo]:
    return [loaders.run_folder(str(folder), str(root), stamp(folder)) for folder in folders]


def _show(folders: list[Path], root: Path, *, following: bool = False) -> None:
    """The table and the curves; `following`: drawn by a fragment that reruns every few seconds,
    until no run is live any more (then the whole page is drawn once more, without it)."""
    runs = _read(folders, root)
    live = [run.name for run in runs if run.live()]
    if following and not live:
        st.rerun()
    if live:
        st.caption(f"following {', '.join(live)} live: refreshed every {REFRESH_SECONDS:g} s")
    st.dataframe(
        [summary(run) for run in runs],
        hide_index=True,
        placeholder=MISSING,
        width="stretch",
        key="runs-table",
    )
    for run in runs:
        for problem in _problems(run):
            st.caption(f"{run.name}: {problem}")
    figure = training_figure({run.name: run.metrics for run in runs}, x=value(PAGE, "x"))
    st.plotly_chart(figure, key="runs-curves", width="stretch")


def _problems(run: RunInfo) -> list[str]:
    problems = [run.problem] if run.problem else []
    if run.torn:
        problems.append("metrics.jsonl ends mid-line (being written): its last line is left out for now")
    if run.bad_lines:
        problems.append(f"{run.bad_lines} line(s) of metrics.jsonl are not JSON objects and are left out")
    if not run.metrics:
        problems.append("no metrics yet")
    return problems


if __name__ == "__main__":
    render()

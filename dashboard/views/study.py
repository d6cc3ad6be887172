"""Study: a `pipesim study` folder, its summary per cell, its learning rates and its plots.

    pipesim dashboard --runs study     # then /study?study=paper&optimizers=adamw,muon&depths=4,8

The folder is one found under the runs folder (two levels deep) or any path typed in. A finished study
(results.csv written) shows summary.csv filtered by schedule, optimizer and depth, the target and the
chosen learning rates, the command's plots (executor.study.figures) and both CSVs as downloads. A study
in progress shows the runs that have finished so far. Study folders are only read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import loaders
from dashboard.params import Param
from dashboard.sidebar import runs_folder
from dashboard.studies import RESULTS, SUMMARY, StudyState, find_studies, lr_rows, stamp
from dashboard.tables import MISSING
from dashboard.widgets import key, publish, restore, value
from schedules.errors import UserError

PAGE = "study"
PARAMS = (
    Param(key="study", default=""),
    Param(key="path", default=""),
    Param(key="schedules", default=[], kind="strs"),
    Param(key="optimizers", default=[], kind="strs"),
    Param(key="depths", default=[], kind="ints"),
)
# summary.csv's columns in the page's order, the study's answers first (the seeds are in the settings
# line; the lr scale only in a study with an lr probe), with short titles and what each means on hover.
# (Comments, not bare strings: Streamlit would show them.)
TABLE = {
    "schedule": ("schedule", None, ""),
    "optimizer": ("optimizer", None, "the optimizer variant: an optimizer, maybe + a staleness correction"),
    "lr_rule": ("lr rule", None, "PipeDream: per-update (the reference's lr) or per-token (lr / m)"),
    "lr_scale": ("lr x", "%.3g", "the lr probe: the swept lr times this"),
    "stages": ("P", None, "pipeline depth"),
    "gap_mean": ("gap", "%+.4f", "final val loss minus the reference's (same optimizer, P, seed), mean"),
    "seed_spread": ("(spread)", "%.4f", "the gap's standard deviation over seeds"),
    "verdict": ("verdict", None, "a mean gap within the seed spread reads no gap"),
    "iters_to_target_mean": ("steps to target", "%.1f", "mean over the seeds that reached it"),
    "time_to_target_s_mean": ("time, predicted", "%.2f s", "steps to target x the predicted step time"),
    "cpu_time_to_target_s_mean": ("time, this CPU", "%.1f s", "steps to target x this CPU's step time"),
    "reached": ("reached", None, "seeds that reached the target validation loss"),
    "final_val_loss_mean": ("final val loss", "%.4f", "validation loss after the last step, mean over seeds"),
    "final_val_loss_std": ("(std)", "%.4f", "the final val loss's standard deviation over seeds"),
}
PLOTS = (
    ("loss_vs_step", "Loss against steps"),
    ("loss_vs_time", "Loss against predicted time"),
    ("gap_vs_depth", "Gap against depth"),
)


def render() -> None:
    restore(PAGE, PARAMS)
    st.title("Study")
    root = runs_folder()
    folder = _pick(root)
    if folder is None:
        st.info(
            f"No study folders under {root}: make one with `pipesim study --preset quick --out {root}/NAME`, "
            "or type a study folder's path on the left."
        )
    else:
        _show(loaders.study_state(str(folder), stamp(folder)))
    publish(PAGE, PARAMS)


def _pick(root: Path) -> Path | None:
    """The study folder: the path typed in, else the one chosen among those under the runs folder."""
    found = {
        folder.relative_to(root).as_posix() if folder != root else folder.name: folder
        for folder in find_studies(root)
    }
    names = list(found)
    widget = key(PAGE, "study")
    if st.session_state.get(widget) not in names:
        st.session_state[widget] = names[-1] if names else ""
    typed = value(PAGE, "path").strip()
    with st.sidebar:
        if names:
            st.selectbox(
                "Study",
                options=names,
                key=widget,
                disabled=bool(typed),
                help=f"Study folders under `{root}` (the path below, when given, is shown instead)",
            )
        st.text_input("or a study folder's path", key=key(PAGE, "path"), placeholder="study/paper")
    if typed:
        return Path(typed).expanduser()
    return found.get(value(PAGE, "study"))


def _show(state: StudyState) -> None:
    st.caption(f"`{state.path}`, read only")
    if state.status in ("missing", "not a study"):
        st.warning(state.problem)
        return
    st.markdown(_settings_line(state))
    chosen = _filters(state.settings)
    if not all(chosen):
        st.info("Pick at least one schedule, one optimizer and one depth.")
        return
    if state.status != "finished":
        _in_progress(state, *chosen)
        return
    try:  # the tables are the CSVs as written; the target and the plots need every run file
        analysis = loaders.study_analysis(str(state.path), stamp(state.path))
    except (UserError, ValueError) as error:
        analysis = None
        st.error(f"{error} (the target and the plots need every run file; the tables are the CSVs)")
    if analysis is not None:
        st.markdown(
            f"**Target validation loss {analysis.target:.4f}**: {analysis.target_how}. "
            f"Predicted times are for {analysis.machine}."
        )
    _summary(state, *chosen)
    _lrs(state)
    if analysis is not None:
        _plots(state, *chosen)
    _downloads(state)


def _chosen(row: dict[str, Any], schedules: tuple, variants: tuple, depths: tuple) -> bool:
    """Whether a row (of summary.csv, or a run's: its variant under `variant`) passes the filters."""
    variant = row.get("optimizer", row.get("variant"))
    return row.get("schedule") in schedules and variant in variants and row.get("stages") in depths


def _settings_line(state: StudyState) -> str:
    study = state.settings
    joined = {
        name: ", ".join(str(item) for item in study.get(name, []))
        for name in ("schedules", "variants", "depths", "seeds")
    }
    return (
        f"Preset `{state.preset or '?'}`: schedules {joined['schedules']} (the first is the reference); "
        f"optimizers {joined['variants']}; P = {joined['depths']}; seeds {joined['seeds']}; "
        f"{study.get('steps', '?')} steps of m = {study.get('microbatches', '?')} microbatches; "
        f"model `{study.get('model', '?')}`."
    )


def _in_progress(state: StudyState, schedules: tuple, variants: tuple, depths: tuple) -> None:
    total = loaders.study_size(json.dumps(state.settings, sort_keys=True))
    done = len(state.runs)
    if state.status == "empty":
        st.info(
            f"In progress: none of the {f'{total} ' if total else ''}runs has finished yet; the "
            f"learning-rate sweep has finished {state.sweep_runs} run(s). The tables and plots appear "
            f"when `pipesim study` has written {RESULTS}."
        )
    else:
        st.info(
            f"In progress: {done}{f' of {total}' if total else ''} runs have finished. The tables and plots "
            f"appear when `pipesim study` has written {RESULTS}; below, the runs finished so far."
        )
    if total:
        st.progress(min(1.0, done / total), text=f"{done} of {total} runs")
    _lrs(state)
    rows = [row for row in state.runs if _chosen(row, schedules, variants, depths)]
    if rows:
        st.subheader("Runs finished so far")
        st.dataframe(rows, hide_index=True, placeholder=MISSING, width="stretch", key="study-runs")
        st.caption(
            "A schedule whose numbers do not depend on the depth (1F1B; 2BW without gradient clipping) "
            "runs once, at the smallest depth (docs/study/README.md)."
        )


def _filters(settings: dict[str, Any]) -> tuple[tuple, tuple, tuple]:
    """Multiselects of the study's schedules, optimizers and depths (all of them when the URL says none)."""
    choices = {
        "schedules": list(settings.get("schedules", [])),
        "optimizers": list(settings.get("variants", [])),
        "depths": list(settings.get("depths", [])),
    }
    labels = {"schedules": "Schedules", "optimizers": "Optimizers", "depths": "P (stages)"}
    with st.sidebar:
        for name, options in choices.items():
            widget = key(PAGE, name)
            kept = [item for item in st.session_state.get(widget) or [] if item in options]
            st.session_state[widget] = kept or options
            st.multiselect(labels[name], options=options, key=widget)
    return tuple(value(PAGE, "schedules")), tuple(value(PAGE, "optimizers")), tuple(value(PAGE, "depths"))


def _summary(state: StudyState, schedules: tuple, variants: tuple, depths: tuple) -> None:
    st.subheader("Summary per cell, over seeds")
    probe = any(row["lr_scale"] != 1.0 for row in state.summary)
    columns = [column for column in TABLE if probe or column != "lr_scale"]
    rows = [
        {TABLE[column][0]: row.get(column) for column in columns}
        for row in state.summary
        if _chosen(row, schedules, variants, depths)
    ]
    config = {
        title: st.column_config.NumberColumn(format=fmt, help=help or None)
        if fmt
        else st.column_config.Column(help=help or None)
        for title, fmt, help in (TABLE[column] for column in columns)
    }
    st.dataframe(
        rows, hide_index=True, placeholder=MISSING, width="stretch", column_config=config, key="study-summary"
    )
    st.caption(
        f"Gap: the final validation loss minus that of the reference ({state.settings['schedules'][0]}) "
        "with the same optimizer, depth and seed, averaged over seeds; spread: the gap's standard "
        "deviation over seeds, and a mean gap within it reads `no gap`. Steps and times to target: means "
        "over the seeds that reached it. PipeDream rows: `per-update` gives every update the reference's "
        "lr, `per-token` lr / m."
    )


def _lrs(state: StudyState) -> None:
    rows = lr_rows(state.lrs)
    if not rows:
        st.caption("No lrs.json yet: the learning-rate sweep on the reference is running.")
        return
    st.subheader("Learning rates")
    st.dataframe(rows, hide_index=True, placeholder=MISSING, key="study-lrs")
    st.caption(
        "One lr per optimizer, from a sweep on the reference at the smallest depth (the lowest final "
        "validation loss wins); a correction uses its base optimizer's lr."
    )


def _plots(state: StudyState, schedules: tuple, variants: tuple, depths: tuple) -> None:
    st.subheader("Plots")
    figures = loaders.study_figures(str(state.path), stamp(state.path), schedules, variants, depths)
    st.caption(
        f"Mean validation loss over seeds; the reference ({state.settings['schedules'][0]}) is always "
        "drawn, and a correction's panel also shows the reference with its base optimizer."
    )
    for tab, (name, _) in zip(st.tabs([title for _, title in PLOTS]), PLOTS, strict=True):
        with tab:
            st.plotly_chart(figures[name], key=f"study-{name}", width="stretch")


def _downloads(state: StudyState) -> None:
    columns = st.columns(2)
    for column, name in zip(columns, (RESULTS, SUMMARY), strict=True):
        with column:
            st.download_button(
                f"{name} ({'one row per run' if name == RESULTS else 'one row per cell'})",
                data=(state.path / name).read_bytes(),
                file_name=name,
                mime="text/csv",
                on_click="ignore",
            )


if __name__ == "__main__":
    render()

"""The sidebar every page shares: what the dashboard is, and the runs folder (`pipesim dashboard --runs`).

    runs = shared_sidebar()        # in dashboard/app.py, before the page draws its own controls

The runs folder comes from the command line (`--runs DIR`, passed in the PIPESIM_RUNS environment
variable) and can be changed here for the session; the Runs, Compare and Study pages read it, never
write it.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from dashboard.rundirs import RUNS_VARIABLE

DEFAULT_RUNS = "runs"
RUNS_KEY = "shared.runs"


def runs_folder() -> Path:
    """The runs folder of this session."""
    return Path(st.session_state.get(RUNS_KEY) or os.environ.get(RUNS_VARIABLE) or DEFAULT_RUNS).expanduser()


def shared_sidebar() -> Path:
    """Draw the shared part of the sidebar; return the runs folder."""
    if RUNS_KEY not in st.session_state:
        st.session_state[RUNS_KEY] = os.environ.get(RUNS_VARIABLE) or DEFAULT_RUNS
    with st.sidebar:
        st.caption("**pipesim**: predict, run and compare pipeline-parallel schedules")
        st.text_input(
            "Runs folder",
            key=RUNS_KEY,
            help="Run folders of `pipesim run --out DIR`, read only: the Runs and Compare pages list them; "
            "the Study page lists the study folders (`pipesim study --out DIR`) in it.",
        )
        st.divider()
    return runs_folder()

"""The dashboard's router: `pipesim dashboard` (or `streamlit run dashboard/app.py`) starts here.

    pipesim dashboard --port 8501 --runs runs

st.navigation picks the page from the URL (/explore, /compare, /runs, /sweep, /study); each page is one file
under dashboard/views/ with one render(). The shared sidebar comes first, then the page's own controls.

Note: the folder is not called pages/. Streamlit takes a pages/ folder beside the main script for its
older multipage layout and, for a first visit to /explore, would run views/explore.py by itself,
without this router and its shared sidebar.
"""

from __future__ import annotations

import streamlit as st

from dashboard.sidebar import shared_sidebar

# (file, title, icon) of every page, in the sidebar's order; the first is the default. (No bare strings
# in this file or a page: Streamlit would show them.)
PAGES = (
    ("views/explore.py", "Explore", ":material/view_timeline:"),
    ("views/compare.py", "Compare", ":material/compare_arrows:"),
    ("views/runs.py", "Runs", ":material/monitoring:"),
    ("views/sweep.py", "Sweep", ":material/grid_on:"),
    ("views/study.py", "Study", ":material/science:"),
)


def main() -> None:
    st.set_page_config(page_title="pipesim", page_icon=":material/view_timeline:", layout="wide")
    pages = [
        st.Page(path, title=title, icon=icon, default=index == 0)
        for index, (path, title, icon) in enumerate(PAGES)
    ]
    navigation = st.navigation(pages)
    shared_sidebar()
    navigation.run()


main()

"""The Streamlit dashboard: explore schedules, compare predicted with measured traces, follow runs, sweep.

    pipesim dashboard --runs runs        # http://127.0.0.1:8501

app.py is the st.navigation router; views/ holds one file per page, each with one render(); figures/
holds the pure figure functions (trace or metrics in, plotly figure out) and tables.py the table rows,
both free of Streamlit; loaders.py caches what the pages show; params.py and widgets.py keep every
setting in the URL. The dashboard only reads run folders and trace files.
"""

"""Pure figure functions: traces, metrics and sweep rows in, plotly figures out (no Streamlit)."""

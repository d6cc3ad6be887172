"""Streamlit glue between a page's widgets and its URL (dashboard/params.py holds the pure part).

    restore("explore", PARAMS)                  # before the widgets: URL, else last visit, else default
    st.number_input("P", key=key("explore", "p"))
    values = publish("explore", PARAMS)         # after them: the URL now says what the page shows

A widget gets its value through st.session_state under its key (never through `value=` as well,
which Streamlit refuses). Streamlit forgets the state of widgets that a run did not draw, for example
those of another page; the values a page last showed are kept under a key of their own so that going
back to the page finds them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from dashboard.params import Param, parse, write_query


def key(page: str, name: str) -> str:
    """The session-state key of a page's widget."""
    return f"{page}.{name}"


def _saved_key(page: str) -> str:
    return f"_saved.{page}"


def restore(page: str, params: Sequence[Param]) -> None:
    """Give every widget of the page a value before it is drawn (URL first, then the last visit)."""
    saved = st.session_state.get(_saved_key(page), {})
    for param in params:
        widget = key(page, param.key)
        if widget in st.session_state:
            continue
        if param.key in st.query_params:
            st.session_state[widget] = parse(param, st.query_params[param.key])
        else:
            st.session_state[widget] = saved.get(param.key, param.default)


def value(page: str, name: str) -> Any:
    """A page widget's current value."""
    return st.session_state[key(page, name)]


def publish(page: str, params: Sequence[Param]) -> dict[str, Any]:
    """After the widgets: remember their values and put them in the URL (defaults left out)."""
    drawn = {
        param.key: st.session_state[key(page, param.key)]
        for param in params
        if key(page, param.key) in st.session_state
    }
    st.session_state[_saved_key(page)] = {**st.session_state.get(_saved_key(page), {}), **drawn}
    query = write_query(params, drawn)
    if dict(st.query_params) != query:
        st.query_params.from_dict(query)
    return drawn

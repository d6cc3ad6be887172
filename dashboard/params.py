"""A page's settings as URL query parameters: parse what the URL says, write back what the page shows.

    P = Param(key="p", default=4, kind="int", minimum=1, maximum=64)
    read_query((P,), {"p": "8"})        # {"p": 8}
    write_query((P,), {"p": 8})         # {"p": "8"}   (defaults are left out: short URLs)

Pure functions, no Streamlit (dashboard/widgets.py binds them to widgets). A value the URL gets wrong
(not a number, out of range, not one of the choices) falls back to the default: a shared link that no
longer fits still opens the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["int", "float", "str", "bool", "strs", "ints"]


@dataclass(frozen=True, kw_only=True)
class Param:
    """One setting of a page, as its widget holds it and as the URL spells it."""

    key: str
    """Query parameter name (also the widget's key within its page)."""
    default: Any
    """Value when the URL does not say (or says something unusable)."""
    kind: Kind = "str"
    """int, float, str, bool ("1"/"0"), strs or ints (comma lists, for multiselects)."""
    choices: tuple[Any, ...] = ()
    """Allowed values (of each item for lists); empty: any."""
    minimum: float | None = None
    """Smallest number allowed (int, float and ints)."""
    maximum: float | None = None
    """Largest number allowed."""


def parse(param: Param, raw: str) -> Any:
    """The value `raw` means for `param`, or its default when it means nothing valid."""
    try:
        value = _parse(param, raw.strip())
    except ValueError:
        return param.default
    return value if _valid(param, value) else param.default


def _parse(param: Param, raw: str) -> Any:
    if param.kind == "int":
        return int(raw)
    if param.kind == "float":
        return float(raw)
    if param.kind == "bool":
        if raw not in ("0", "1"):
            raise ValueError(raw)
        return raw == "1"
    if param.kind == "strs":
        return [item for item in raw.split(",") if item]
    if param.kind == "ints":
        return [int(item) for item in raw.split(",") if item]
    return raw


def _valid(param: Param, value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    if param.kind in ("strs", "ints") and not items:
        return False
    for item in items:
        if param.choices and item not in param.choices:
            return False
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if param.minimum is not None and item < param.minimum:
                return False
            if param.maximum is not None and item > param.maximum:
                return False
    return True


def format_value(param: Param, value: Any) -> str:
    """The URL's spelling of a value (the inverse of parse)."""
    if param.kind == "bool":
        return "1" if value else "0"
    if param.kind in ("strs", "ints"):
        return ",".join(str(item) for item in value)
    if param.kind == "float":
        return f"{value:g}"
    return str(value)


def read_query(params: Sequence[Param], query: Mapping[str, str]) -> dict[str, Any]:
    """Every param's value: from the query where it has the key, else the default."""
    return {
        param.key: parse(param, query[param.key]) if param.key in query else param.default for param in params
    }


def write_query(params: Sequence[Param], values: Mapping[str, Any]) -> dict[str, str]:
    """The query of `values`, leaving out defaults and params without a value."""
    query = {}
    for param in params:
        if param.key in values and values[param.key] != param.default:
            query[param.key] = format_value(param, values[param.key])
    return query

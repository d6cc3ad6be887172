"""The schedule IR, its generators, lowering passes, validation and exact analytics.

Standard library and networkx only: importing this package never imports torch, simpy or streamlit.
"""

from schedules.ir import (
    Action,
    Kind,
    Layout,
    Schedule,
    ScheduleError,
    Versioning,
    format_action,
    parse_action,
)
from schedules.registry import SCHEDULES, build, get_info

__all__ = [
    "SCHEDULES",
    "Action",
    "Kind",
    "Layout",
    "Schedule",
    "ScheduleError",
    "Versioning",
    "build",
    "format_action",
    "get_info",
    "parse_action",
]

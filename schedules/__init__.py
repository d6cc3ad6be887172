"""The schedule IR, its generators, lowering passes, validation and exact analytics.

Standard library and networkx only: importing this package never imports torch, simpy or streamlit.
"""

from schedules.analytics import Analytics, analyze
from schedules.costs import Costs
from schedules.dryrun import Timeline, dry_run
from schedules.graph import build_graph, validate
from schedules.grid import render_grid, render_order
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
    "Analytics",
    "Costs",
    "Kind",
    "Layout",
    "Schedule",
    "ScheduleError",
    "Timeline",
    "Versioning",
    "analyze",
    "build",
    "build_graph",
    "dry_run",
    "format_action",
    "get_info",
    "parse_action",
    "render_grid",
    "render_order",
    "validate",
]

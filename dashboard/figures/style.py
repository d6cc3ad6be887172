"""Colours, time and size units shared by the figure functions.

unit = time_unit(trace.makespan)        # TimeUnit(name="ms", scale=1e3)
unit.scale * 0.0123                     # 12.3 (ms)
"""

from __future__ import annotations

from dataclasses import dataclass

KIND_COLORS: dict[str, str] = {
    "F": "#4C78A8",  # blue
    "B": "#54A24B",  # green
    "I": "#2CA6A4",  # teal: the input half of a split backward
    "W": "#F2B701",  # amber: the deferred weight half
    "OPT": "#E45756",  # red
    "OVERLAP_F_B": "#000000",  # black: the marker of an overlapped pair (no time of its own)
    "SEND": "#9D6AB8",  # purple
    "RECV": "#BAB0AC",  # grey: waiting for a message
}
"""One colour per kind of action (traces.compare.KIND_GROUPS), the same on every figure."""
KIND_NAMES: dict[str, str] = {
    "F": "F forward",
    "B": "B backward",
    "I": "I input gradient",
    "W": "W weight gradient",
    "OPT": "OPT optimizer step",
    "OVERLAP_F_B": "OVERLAP_F_B pair marker",
    "SEND": "SEND",
    "RECV": "RECV (waiting)",
}
"""Legend entries of the kinds."""

SERIES_COLORS = (
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
    "#EECA3B",
    "#79706E",
)
"""Colours of schedules, runs and ranks in line and bar charts, in order."""

GIB = 1 << 30
"""Bytes per GiB: memory is shown in GiB."""


@dataclass(frozen=True, kw_only=True)
class TimeUnit:
    """The unit a figure shows times in."""

    name: str
    """s, ms or us."""
    scale: float
    """Multiply seconds by this."""


def time_unit(seconds: float) -> TimeUnit:
    """The largest of s, ms, us in which `seconds` is at least 1 (s for 0)."""
    for name, scale in (("s", 1.0), ("ms", 1e3), ("us", 1e6)):
        if seconds * scale >= 1:
            return TimeUnit(name=name, scale=scale)
    return TimeUnit(name="us", scale=1e6) if seconds > 0 else TimeUnit(name="s", scale=1.0)


def format_seconds(value: float | None) -> str:
    """A time in the unit that suits it: 1.23 s, 45.6 ms, 789 us ("-" for None)."""
    if value is None:
        return "-"
    unit = time_unit(abs(value))
    return f"{value * unit.scale:.4g} {unit.name}"


def rank_row(rank: int, *, send: bool = False) -> str:
    """A timeline row's name: the rank's compute and receives, or its sends."""
    return f"rank {rank} send" if send else f"rank {rank}"


def series_color(index: int) -> str:
    return SERIES_COLORS[index % len(SERIES_COLORS)]

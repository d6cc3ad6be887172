"""A timeline too big to draw bar by bar, as one heatmap strip of time bins per rank.

    from dashboard.figures.strips import binned_strips
    traces, cells, note = binned_strips(trace, events, unit)     # what timeline.py draws above MAX_BARS

Each rank's time is cut into equal bins; a bin takes the colour of the kind of action that kept the rank
busiest in it, or stays blank where the rank was mostly idle; its hover gives every kind's share. The
busy time per bin is exact (intervals split across bins), computed with numpy from cumulative sums:

    actions  |F|F|B|F|B|F|B|B|..     ->   bins  | F | B | B | F |..   (the busiest kind of each)
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import KIND_COLORS, KIND_NAMES, TimeUnit, format_seconds, rank_row
from traces.compare import KIND_GROUPS, kind_group
from traces.schema import Event, Trace

MAX_BINS = 1200
"""Time bins per rank (about a pixel each on a wide screen)."""
MAX_CELLS = 30_000
"""Bins over all ranks (each is a few bytes of the page: a kind and a busy share for the hover)."""


def binned_strips(trace: Trace, events: list[Event], unit: TimeUnit) -> tuple[list, int, str]:
    """A heatmap strip per rank: time bins, each in the colour of what the rank did most in it."""
    ranks = trace.schedule.ranks
    bins = max(16, min(MAX_BINS, MAX_CELLS // max(1, ranks)))
    origin = min(event.start for event in events)
    edges = np.linspace(origin, trace.makespan, bins + 1)
    width = edges[1] - edges[0]
    shares = busy_per_bin(events, ranks, edges) / width  # [rank, kind, bin], 0..1
    idle = np.clip(1 - shares.sum(axis=1), 0.0, 1.0)  # [rank, bin]
    busiest = shares.argmax(axis=1)
    dominant = busiest.astype(float)
    dominant[shares.max(axis=1) < idle] = np.nan  # mostly idle: left blank
    names = [rank_row(rank) for rank in range(ranks)]
    centres = np.round((edges[:-1] + width / 2) * unit.scale, 6)
    heatmap = go.Heatmap(
        x=centres,
        y=names,
        z=[[None if np.isnan(kind) else int(kind) for kind in row] for row in dominant],  # short JSON
        zmin=-0.5,
        zmax=len(KIND_GROUPS) - 0.5,
        colorscale=_kind_scale(),
        showscale=False,
        text=np.asarray(KIND_GROUPS)[busiest],
        customdata=np.rint((1 - idle) * 100).astype(int),
        hovertemplate="%{y}, %{x:.4g} " + unit.name + ": mostly %{text}, busy %{customdata}%<extra></extra>",
        xgap=0,
        ygap=3,
    )
    legend = [
        go.Bar(
            name=KIND_NAMES[kind], x=[None], y=[None], orientation="h", marker={"color": KIND_COLORS[kind]}
        )
        for kind in KIND_GROUPS
        if kind != "SEND" and shares[:, KIND_GROUPS.index(kind)].any()
    ]
    note = (
        f"{len(events):,} actions shown as {bins:,} time bins per rank ({format_seconds(width)} each), "
        "each in the colour of what the rank did most in it (blank: mostly idle); "
        "sends not drawn"
    )
    return [heatmap, *legend], ranks * bins, note


def _kind_scale() -> list:
    """A colour scale that maps kind index i (KIND_GROUPS) to its colour, in steps."""
    steps = len(KIND_GROUPS)
    scale = []
    for index, kind in enumerate(KIND_GROUPS):
        scale += [[index / steps, KIND_COLORS[kind]], [(index + 1) / steps, KIND_COLORS[kind]]]
    return scale


def busy_per_bin(events: list, ranks: int, edges: np.ndarray) -> np.ndarray:
    """Seconds each rank spent on each kind within each bin (sends left out)."""
    starts: dict[tuple[int, int], list[float]] = defaultdict(list)
    lengths: dict[tuple[int, int], list[float]] = defaultdict(list)
    index = {kind: position for position, kind in enumerate(KIND_GROUPS)}
    for event in events:
        if event.stream != "send":
            key = (event.rank, index[kind_group(event.action)])
            starts[key].append(event.start)
            lengths[key].append(event.end - event.start)
    busy = np.zeros((ranks, len(KIND_GROUPS), len(edges) - 1))
    for (rank, kind), begun in starts.items():
        cumulative = _busy_before(np.asarray(begun), np.asarray(lengths[(rank, kind)]), edges)
        busy[rank, kind] = np.diff(cumulative)
    return busy


def _busy_before(starts: np.ndarray, lengths: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Busy seconds before each moment, for intervals that are sorted and do not overlap (one rank's
    compute and receives): all of the intervals begun earlier, the last one only up to the moment."""
    last = np.searchsorted(starts, moments, side="right") - 1
    safe = np.clip(last, 0, None)
    before = np.concatenate(([0.0], np.cumsum(lengths)))
    partial = np.clip(moments - starts[safe], 0.0, lengths[safe])
    return np.where(last >= 0, before[safe] + partial, 0.0)

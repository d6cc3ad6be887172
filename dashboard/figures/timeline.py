"""Trace -> plotly Gantt timeline: a row per rank, a bar per action, coloured by kind.

    from dashboard.figures.timeline import timeline_figure, comparison_timeline
    timeline_figure(simulate(build("1f1b", 4, 8)).trace()).show()
    comparison_timeline(measured, predicted, labels=("measured", "predicted"), mode="overlaid")

Row "rank r" holds the rank's compute (F, B, I, W, OPT) and its receives (time spent waiting for a
message), which never overlap; row "rank r send" holds its sends, which run beside compute on their own
stream. Bars carry the microbatch number; the hover names the action, its step, microbatch and weight
version, and its times. An action of zero length is not a bar (an optimizer step of zero cost is a tick).

A browser draws a few thousand bars smoothly, not tens of thousands: above `max_bars` actions a
timeline becomes one strip of time bins per rank (dashboard/figures/strips.py), and a note on the
figure says so. `figure.layout.meta` records what was drawn: {"actions", "bars", "aggregated", "rows"}.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.strips import binned_strips
from dashboard.figures.style import KIND_COLORS, KIND_NAMES, TimeUnit, rank_row, time_unit
from traces.compare import KIND_GROUPS, kind_group
from traces.schema import Trace

MAX_BARS = 4000
"""Above this many actions a timeline is drawn as strips of time bins."""
LABELLED_BARS = 1500
"""Up to this many bars carry their microbatch number (text is what makes big charts slow)."""
LABEL_SHARE = 1 / 80
"""A bar carries its number when it spans at least this share of the time axis (~12 px of 1000)."""
ROW_HEIGHT = 26
"""Pixels per timeline row."""


@dataclass
class _Columns:
    """One kind's bars as plotly wants them: parallel lists."""

    rows: list[str] = field(default_factory=list)
    bases: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    hover: list[list] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Drawn:
    """The plotly traces of one timeline and what they show."""

    traces: list
    rows: list[str]
    actions: int
    bars: int
    note: str = ""
    """Empty, or what the aggregation did (shown on the figure)."""


def timeline_figure(
    trace: Trace,
    *,
    title: str = "",
    max_bars: int = MAX_BARS,
    show_sends: bool = True,
    x_max: float | None = None,
) -> go.Figure:
    """The Gantt chart of one trace; `x_max` (seconds) lines several figures up on one time scale."""
    unit = time_unit(max(x_max or 0.0, trace.makespan))
    drawn = draw_timeline(trace, unit=unit, max_bars=max_bars, show_sends=show_sends, x_max=x_max)
    figure = go.Figure(drawn.traces)
    _layout_rows(figure, drawn.rows, unit)
    if x_max is not None:
        figure.update_xaxes(range=[0, x_max * unit.scale])
    _finish(figure, title=title, notes=[drawn.note], rows=len(drawn.rows), drawn=[drawn])
    return figure


def comparison_timeline(
    a: Trace,
    b: Trace,
    *,
    labels: tuple[str, str] = ("A", "B"),
    mode: str = "stacked",
    max_bars: int = MAX_BARS,
    show_sends: bool = False,
) -> go.Figure:
    """Two traces on one time axis: `stacked` (one above the other) or `overlaid` (A in the upper half
    of every rank's row, B hatched in the lower half; big traces, drawn as strips, are stacked)."""
    unit = time_unit(max(a.makespan, b.makespan))
    half = max_bars // 2
    if mode == "overlaid":
        first = draw_timeline(a, unit=unit, max_bars=half, show_sends=show_sends, offset=-0.44, width=0.42)
        second = draw_timeline(
            b, unit=unit, max_bars=half, show_sends=show_sends, offset=0.02, width=0.42, hatched=True
        )
        if not (first.note or second.note):
            return _overlaid(first, second, labels, unit)
    drawn = [
        draw_timeline(trace, unit=unit, max_bars=half, show_sends=show_sends, legend=trace is a)
        for trace in (a, b)
    ]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14, subplot_titles=labels)
    for row, one in enumerate(drawn, start=1):
        for plotted in one.traces:
            figure.add_trace(plotted, row=row, col=1)
        _layout_rows(figure, one.rows, unit, row=row, time_title=row == 2)
    notes = [f"{label}: {one.note}" for label, one in zip(labels, drawn, strict=True) if one.note]
    if mode == "overlaid":
        notes.insert(0, "too many actions to overlay: stacked instead")
    rows = sum(len(one.rows) for one in drawn) + 3  # + the subplot titles and the gap
    _finish(figure, title="", notes=notes, rows=rows, drawn=drawn, legend_below=True)
    return figure


def _overlaid(first: Drawn, second: Drawn, labels: tuple[str, str], unit: TimeUnit) -> go.Figure:
    _rename(first, labels[0])
    _rename(second, labels[1], hide_legend=True)
    figure = go.Figure(first.traces + second.traces)
    rows = first.rows if len(first.rows) >= len(second.rows) else second.rows
    _layout_rows(figure, rows, unit)
    notes = [f"upper half of each row: {labels[0]}; lower half, hatched: {labels[1]}"]
    _finish(figure, title="", notes=notes, rows=2 * len(rows), drawn=[first, second])  # two half rows
    return figure


def draw_timeline(
    trace: Trace,
    *,
    unit: TimeUnit,
    max_bars: int = MAX_BARS,
    show_sends: bool = True,
    legend: bool = True,
    offset: float | None = None,
    width: float | None = None,
    hatched: bool = False,
    x_max: float | None = None,
) -> Drawn:
    """The bars of one trace (a heatmap strip per rank above max_bars actions)."""
    drawable = [event for event in trace.events if event.end > event.start]
    if not show_sends:
        drawable = [event for event in drawable if event.stream != "send"]
    rows = [rank_row(rank) for rank in range(trace.schedule.ranks)]
    if len(drawable) > max_bars:
        strips, cells, note = binned_strips(trace, drawable, unit)
        for plotted in strips:
            plotted.showlegend = legend and plotted.type == "bar"
        return Drawn(traces=strips, rows=rows, actions=len(drawable), bars=cells, note=note)
    if any(event.stream == "send" for event in drawable):
        rows = [name for row in rows for name in (row, f"{row} send")]
    span = max(x_max or 0.0, trace.makespan)
    shortest = span * LABEL_SHARE if len(drawable) <= LABELLED_BARS else float("inf")
    columns = _detailed(drawable, unit, shortest_labelled=shortest)
    traces = [
        _bars(kind, columns[kind], unit, legend=legend, offset=offset, width=width, hatched=hatched)
        for kind in KIND_GROUPS
        if kind in columns
    ]
    return Drawn(traces=traces + _ticks(trace, unit), rows=rows, actions=len(drawable), bars=len(drawable))


def _detailed(events: list, unit: TimeUnit, *, shortest_labelled: float) -> dict[str, _Columns]:
    """Bars by kind; the compute bars at least `shortest_labelled` seconds long show their microbatch."""
    columns: dict[str, _Columns] = defaultdict(_Columns)
    scale = unit.scale
    for event in events:
        action = event.action
        kind = kind_group(action)
        column = columns[kind]
        column.rows.append(rank_row(event.rank, send=event.stream == "send"))
        column.bases.append(event.start * scale)
        column.lengths.append((event.end - event.start) * scale)
        microbatch = "-" if action.microbatch is None else action.microbatch
        wide = event.end - event.start >= shortest_labelled
        column.text.append(str(microbatch) if wide and kind in ("F", "B", "I", "W") else "")
        version = "-" if action.version is None else action.version
        column.hover.append(
            [str(action), action.step, microbatch, version, event.start * scale, event.end * scale]
        )
    return columns


def _bars(
    kind: str,
    column: _Columns,
    unit: TimeUnit,
    *,
    legend: bool,
    offset: float | None,
    width: float | None,
    hatched: bool,
) -> go.Bar:
    marker: dict = {"color": KIND_COLORS[kind], "line": {"width": 0}}
    if hatched:
        marker["pattern"] = {"shape": "/", "fgcolor": "white", "solidity": 0.3}
    template = (
        "<b>%{customdata[0]}</b> on %{y}<br>step %{customdata[1]}, microbatch %{customdata[2]}, "
        "weight version %{customdata[3]}<br>%{customdata[4]:.4g} to %{customdata[5]:.4g} "
        f"{unit.name} (%{{x:.4g}} {unit.name})<extra>{kind}</extra>"
    )
    return go.Bar(
        name=KIND_NAMES[kind],
        legendgroup=kind,
        showlegend=legend,
        orientation="h",
        y=column.rows,
        base=column.bases,
        x=column.lengths,
        text=column.text or None,
        textposition="inside",
        insidetextanchor="middle",
        customdata=column.hover,
        hovertemplate=template,
        marker=marker,
        offset=offset,
        width=width,
    )


def _ticks(trace: Trace, unit: TimeUnit) -> list:
    """Optimizer steps of zero cost, which no bar can show, as ticks."""
    zero = [event for event in trace.events if event.end <= event.start and kind_group(event.action) == "OPT"]
    if not zero:
        return []
    return [
        go.Scatter(
            name="OPT",
            legendgroup="OPT",
            showlegend=False,
            mode="markers",
            x=[event.start * unit.scale for event in zero],
            y=[rank_row(event.rank) for event in zero],
            marker={
                "symbol": "line-ns-open",
                "size": ROW_HEIGHT - 6,
                "color": KIND_COLORS["OPT"],
                "line": {"width": 3},
            },
            customdata=[str(event.action) for event in zero],
            hovertemplate="<b>%{customdata}</b> on %{y} at %{x:.4g} " + unit.name + "<extra>OPT</extra>",
        )
    ]


def _rename(drawn: Drawn, label: str, *, hide_legend: bool = False) -> None:
    """Name the trace in every hover; the second of two overlaid timelines repeats no legend entry."""
    for plotted in drawn.traces:
        plotted.hovertemplate = plotted.hovertemplate.replace("<extra>", f"<extra>{label} ")
        if hide_legend:
            plotted.showlegend = False


def _layout_rows(
    figure: go.Figure, rows: list[str], unit: TimeUnit, *, row: int | None = None, time_title: bool = True
) -> None:
    where = {"row": row, "col": 1} if row is not None else {}
    figure.update_yaxes(
        categoryorder="array", categoryarray=rows, autorange="reversed", showgrid=False, **where
    )
    figure.update_xaxes(title_text=f"time ({unit.name})" if time_title else None, zeroline=False, **where)


def _finish(
    figure: go.Figure,
    *,
    title: str,
    notes: list[str],
    rows: int,
    drawn: list[Drawn],
    legend_below: bool = False,
) -> None:
    """Height from the rows, the notes above the plot, the legend above it (below: under the time
    axis, where stacked timelines keep their titles clear) and what was drawn in layout.meta."""
    text = "<br>".join(note for note in notes if note)
    top = 40 + (24 if title else 0) + 16 * text.count("<br>") + (18 if text else 0)
    plot = ROW_HEIGHT * max(rows, 2) + 30
    bottom = 90 if legend_below else 50
    legend = {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0}
    if legend_below:
        legend.update(yanchor="top", y=-65 / plot, xanchor="left", x=0.0)
    figure.update_layout(
        barmode="overlay",
        height=top + plot + bottom,
        margin={"l": 90, "r": 20, "t": top, "b": bottom},
        legend=legend,
        uniformtext={"minsize": 8, "mode": "hide"},
        bargap=0.15,
        meta={
            "actions": sum(d.actions for d in drawn),
            "bars": sum(d.bars for d in drawn),
            "aggregated": any(d.note for d in drawn),
            "rows": [list(d.rows) for d in drawn],
        },
    )
    if title:
        figure.update_layout(title={"text": title, "x": 0, "xanchor": "left", "y": 0.99, "yanchor": "top"})
    if text:
        figure.add_annotation(
            text=text,
            xref="paper",
            yref="paper",
            x=0,
            y=1,
            yanchor="bottom",
            xanchor="left",
            yshift=22,
            showarrow=False,
            align="left",
            font={"size": 11, "color": "#555"},
        )

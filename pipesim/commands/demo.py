"""`pipesim demo` (what `make demo` runs): a tour of what pipesim predicts, one section after another.

    pipesim demo

Sections: every schedule's exact analytics side by side (P = 4, m = 8 and P = 8, m = 32); what the
simulator predicts for GPT-2 small on 8 H100s; what the executor measures training the tiny GPT here.
Later issues add sections by appending to SECTIONS.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from pipesim.commands import demo_sections
from schedules.analytics import analyze
from schedules.costs import Costs
from schedules.ir import ScheduleError
from schedules.registry import SCHEDULES, ScheduleInfo, build, check_request

ASYNC_STEPS = 4
"""Steps an asynchronous schedule runs in the demo, so that its steady state shows."""
CHUNKS = 2
"""Model chunks per rank for the interleaved schedule."""


@dataclass(frozen=True, kw_only=True)
class Section:
    """One part of the demo."""

    title: str
    """Printed above the section, underlined."""
    render: Callable[[], str]
    """Builds the section's text (may take a while; the title is printed first)."""


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One (P, m) column of the side-by-side comparison."""

    ranks: int
    """Pipeline stages P (devices)."""
    microbatches: int
    """Microbatches per optimizer step m."""


SETTINGS = (Setting(ranks=4, microbatches=8), Setting(ranks=8, microbatches=32))
COLUMNS = (
    "schedule",
    "step time",
    "bubble",
    "peak activations/rank",
    "weight versions/stage",
    "delay/stage",
    "mismatches",
)
LONGEST_LIST = 8
"""Per-stage lists longer than this (interleaved, AMDP) print as a range."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a tour: exact analytics, a GPU prediction and a short real run (what `make demo` runs)",
        description=(  # from SECTIONS, so a section added later shows up here too
            f"A tour of pipesim, about a minute, in {len(SECTIONS)} sections: "
            + "; ".join(section.title for section in SECTIONS)
            + ". The analytics use t_F = 1, t_B = 2 and no communication (P = 4, m = 8 and P = 8, m = 32); "
            "the measured runs train a tiny GPT with 1F1B and 2BW on two ranks of this machine (torchrun, "
            "gloo). Takes no options."
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for index, section in enumerate(SECTIONS):
        if index:
            print()
        print(section.title)
        print("=" * len(section.title))
        print(section.render(), flush=True)
    return 0


def side_by_side() -> str:
    """One table per setting: every schedule that supports it, one row each."""
    parts = []
    for setting in SETTINGS:
        rows = [COLUMNS]
        rows += [schedule_row(info, setting) for info in SCHEDULES.values() if supports(info, setting)]
        parts.append(f"P = {setting.ranks}, m = {setting.microbatches}\n{align(rows)}")
    notes = (
        "step time: one optimizer step in time units (t_F = 1, t_B = 2), steady state for async schedules "
        f"({ASYNC_STEPS} steps); bubble: bubble fraction, the idle share of the P ranks over that step.\n"
        "peak activations: most microbatches a rank holds between forward and backward, in microbatches "
        f"of one stage: an interleaved chunk is 1/{CHUNKS} of a stage, hence the fractions.\n"
        "lists: 'a..b' counts by one from a to b, 'n x k' is n on all k ranks or stages; interleaved has "
        f"{CHUNKS} chunks per rank (2P virtual stages), AMDP P/2 pipelines (P^2/2 stages).\n"
        "mismatches: microbatches whose forward and backward saw different weights, per run, all stages."
    )
    return "\n\n".join([*parts, notes])


def supports(info: ScheduleInfo, setting: Setting) -> bool:
    try:
        check_request(info, setting.ranks, setting.microbatches, 1, _chunks(info))
    except ScheduleError:
        return False
    return True


def schedule_row(info: ScheduleInfo, setting: Setting) -> tuple[str, ...]:
    steps = ASYNC_STEPS if info.asynchronous else 1
    schedule = build(info.name, setting.ranks, setting.microbatches, steps=steps, chunks=_chunks(info))
    result = analyze(schedule, Costs())
    return (
        info.name,
        f"{float(result.step_time):g}",
        f"{float(result.bubble_fraction):.3f}",
        compact(result.peak_activations_per_rank),
        compact(result.weight_versions),
        compact(result.delay),
        f"{sum(result.mismatches)}",
    )


def compact(values: list[float] | list[int]) -> str:
    """A list in few characters: '2 x 8' (all equal), '8..1' (counting by one), '0 to 1 over 32', or as is."""
    numbers = [f"{float(value):g}" for value in values]
    if len(set(numbers)) == 1:
        return f"{numbers[0]} x {len(numbers)}"
    steps = {b - a for a, b in itertools.pairwise(values)}
    if len(values) > 2 and steps in ({1}, {-1}):
        return f"{numbers[0]}..{numbers[-1]}"
    if len(values) > LONGEST_LIST:
        return f"{float(min(values)):g} to {float(max(values)):g} over {len(values)}"
    return " ".join(numbers)


def align(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _chunks(info: ScheduleInfo) -> int:
    return CHUNKS if info.uses_chunks else info.default_chunks


SECTIONS: list[Section] = [
    Section(title="Schedules side by side (exact analytics)", render=side_by_side),
    Section(
        title="Predicted: GPT-2 small on 8 x H100 SXM (simulator, analytic cost model)",
        render=lambda: demo_sections.predicted(),
    ),
    Section(
        title="Measured: the tiny GPT on this machine (executor, torchrun)",
        render=lambda: demo_sections.measured(),
    ),
]
"""What the demo prints, in order; later issues append their sections here."""

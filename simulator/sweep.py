"""Sweep schedules x P x m (x device) through the simulator on a process pool; one CSV row per point.

    points = grid(["gpipe", "1f1b"], ranks=[2, 4], microbatches=[8, 16], requests=[CostRequest()])
    rows = run_sweep(points, jobs=2, progress=ProgressBar(len(points)))
    write_rows("sweep.csv", rows)

A point the schedule cannot take (2BW with m < P, AMDP with odd P, ...) gets a row whose `error` says
why and empty metrics, so the CSV always has the whole grid, in grid order, whatever the pool's
completion order.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

from schedules.errors import UserError
from schedules.registry import ASYNC_DEFAULT_STEPS, DEFAULT_CHUNKS, build, get_info
from simulator.request import CostRequest
from simulator.simulation import simulate
from traces.io import write_atomic

COLUMNS = (
    "schedule",
    "ranks",
    "microbatches",
    "steps",
    "chunks",
    "costs",
    "step_time",
    "samples_per_s",
    "tokens_per_s",
    "bubble_fraction",
    "utilization_mean",
    "peak_memory_max",
    "weight_versions_max",
    "delay_max",
    "mismatches_total",
    "makespan",
    "error",
)


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One simulation of the grid."""

    schedule: str
    """Registry name."""
    ranks: int
    """P."""
    microbatches: int
    """m, per step."""
    steps: int | None = None
    """None: 1 for synchronous schedules, ASYNC_STEPS for asynchronous ones."""
    chunks: int | None = None
    """None: the registry's default (DEFAULT_CHUNKS for interleaved, else 1)."""
    request: CostRequest
    """Where the costs come from (the device varies across a sweep)."""


def grid(
    schedules: Iterable[str],
    *,
    ranks: Iterable[int],
    microbatches: Iterable[int],
    requests: Iterable[CostRequest],
    steps: int | None = None,
    chunks: int | None = None,
) -> list[SweepPoint]:
    """Every combination, schedules outermost, then cost requests (devices), P and m."""
    return [
        SweepPoint(schedule=name, ranks=p, microbatches=m, steps=steps, chunks=chunks, request=request)
        for name in schedules
        for request in requests
        for p in ranks
        for m in microbatches
    ]


def run_point(point: SweepPoint) -> dict[str, Any]:
    """Simulate one point; a user error (sizes the schedule cannot take, a bad cost file) is a row."""
    info = get_info(point.schedule)
    steps = point.steps if point.steps is not None else (ASYNC_DEFAULT_STEPS if info.asynchronous else 1)
    chunks = point.chunks if point.chunks is not None else (DEFAULT_CHUNKS if info.uses_chunks else 1)
    row: dict[str, Any] = {
        "schedule": info.name,
        "ranks": point.ranks,
        "microbatches": point.microbatches,
        "steps": steps,
        "chunks": chunks,
        "costs": point.request.label,
    }
    try:
        schedule = build(info.name, point.ranks, point.microbatches, steps=steps, chunks=chunks)
        metrics = simulate(schedule, point.request.costs_for(schedule)).metrics()
    except UserError as error:
        return {**row, "error": str(error)}
    peaks = [peak for peak in metrics.peak_memory if peak is not None]
    return {
        **row,
        "step_time": metrics.step_time,
        "samples_per_s": metrics.samples_per_s,
        "tokens_per_s": metrics.tokens_per_s,
        "bubble_fraction": metrics.bubble_fraction,
        "utilization_mean": sum(metrics.utilization) / len(metrics.utilization),
        "peak_memory_max": max(peaks) if peaks else "",
        "weight_versions_max": max(metrics.weight_versions),
        "delay_max": max(metrics.delay),
        "mismatches_total": sum(metrics.mismatches),
        "makespan": metrics.makespan,
        "error": "",
    }


def run_sweep(
    points: list[SweepPoint], *, jobs: int = 1, progress: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Rows in grid order; `jobs` > 1 runs them on that many worker processes."""
    if jobs <= 1:
        rows = []
        for point in points:
            rows.append(run_point(point))
            if progress:
                progress()
        return rows
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_point, point) for point in points]
        for future in futures:
            future.add_done_callback(lambda _: progress and progress())
        return [future.result() for future in futures]


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _cell(row.get(column, "")) for column in COLUMNS})
    return out.getvalue()


def _cell(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


def write_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """The CSV, written atomically."""
    write_atomic(path, rows_to_csv(rows))


class ProgressBar:
    """`sweep [#####.....] 12/40` on stderr: redrawn in place on a terminal, a line per tenth otherwise."""

    def __init__(
        self, total: int, stream: TextIO | None = None, width: int = 30, label: str = "sweep"
    ) -> None:
        self.total, self.done, self.width, self.label = total, 0, width, label
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()

    def __call__(self) -> None:
        self.done += 1
        tenth = max(1, self.total // 10)
        if self.terminal or self.done == self.total or self.done % tenth == 0:
            filled = self.width * self.done // max(1, self.total)
            bar = "#" * filled + "." * (self.width - filled)
            end = "\r" if self.terminal and self.done < self.total else "\n"
            self.stream.write(f"{self.label} [{bar}] {self.done}/{self.total}{end}")
            self.stream.flush()

"""Sweep schedules x P x m (x device) through the simulator on a process pool; one CSV row per point.

    points = grid(["gpipe", "1f1b"], ranks=[2, 4], microbatches=[8, 16], requests=[CostRequest()])
    rows = run_sweep(points, jobs=2, progress=ProgressBar(len(points)))
    write_rows("sweep.csv", rows)

A point the schedule cannot take (2BW with m < P, AMDP with odd P, ...) gets a row whose `error` says
why and empty metrics, so the CSV always has the whole grid, in grid order, whatever the pool's
completion order. Points go to the workers in batches (a point takes milliseconds; a round trip to a
worker costs about as much), and a point of more than LARGE actions runs on the columnar path
(simulator/columnar), which gives the same metrics in a fraction of the memory. `backend="dask"` runs
the batches on a Dask cluster instead (simulator/sweep_dask.py; the optional `dask` extra).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO

from schedules.errors import UserError
from schedules.imported import schedule_from_text
from schedules.registry import ASYNC_DEFAULT_STEPS, build, get_info
from simulator.request import CostRequest
from simulator.simulation import simulate
from traces.io import write_atomic
from traces.metrics import Metrics

LARGE = 2_000_000
"""Lowered actions (about 3 x P x m x steps for the 1F1B family) from which a point runs on columns."""
BACKENDS = ("process", "dask")

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
    """None: the registry's default (ScheduleInfo.default_chunks)."""
    request: CostRequest
    """Where the costs come from (the device varies across a sweep)."""
    csv: str | None = None
    """A schedule read from a file (`schedule` is then the file's name): its PyTorch CSV text, which
    the worker reads again (schedules.imported), at the file's own P, m and chunks."""


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
    if point.csv is not None:
        return _file_point(point)
    info = get_info(point.schedule)
    steps = point.steps if point.steps is not None else (ASYNC_DEFAULT_STEPS if info.asynchronous else 1)
    chunks = point.chunks if point.chunks is not None else info.default_chunks
    row: dict[str, Any] = {
        "schedule": info.name,
        "ranks": point.ranks,
        "microbatches": point.microbatches,
        "steps": steps,
        "chunks": chunks,
        "costs": point.request.label,
    }
    try:
        metrics = _metrics(info.name, point.ranks, point.microbatches, steps, chunks, point.request)
    except UserError as error:
        return {**row, "error": str(error)}
    return {**row, **_metric_cells(metrics)}


def _file_point(point: SweepPoint) -> dict[str, Any]:
    """A point of a schedule read from a file: its own P, m and chunks, `steps` repetitions of it."""
    row: dict[str, Any] = {
        "schedule": point.schedule,
        "ranks": point.ranks,
        "microbatches": point.microbatches,
        "steps": point.steps or 1,
        "chunks": point.chunks,
        "costs": point.request.label,
    }
    try:
        schedule = schedule_from_text(point.csv or "", name=point.schedule, steps=point.steps or 1)
        metrics = simulate(schedule, point.request.costs_for(schedule)).metrics()
    except UserError as error:
        return {**row, "error": str(error)}
    return {**row, **_metric_cells(metrics)}


def _metric_cells(metrics: Metrics) -> dict[str, Any]:
    peaks = [peak for peak in metrics.peak_memory if peak is not None]
    return {
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


def _metrics(
    name: str, ranks: int, microbatches: int, steps: int, chunks: int, request: CostRequest
) -> Metrics:
    """The point's metrics: on columns when it is large and has a closed form, else through the IR."""
    from simulator.columnar.generate import has_closed_form

    if chunks == 1 and has_closed_form(name) and 3 * ranks * microbatches * steps >= LARGE:
        from simulator.columnar import simulate_columns
        from simulator.columnar.generate import lowered_columns

        columns = lowered_columns(name, ranks, microbatches, steps)
        return simulate_columns(columns, request.costs_for(columns.header()), check=False).metrics
    schedule = build(name, ranks, microbatches, steps=steps, chunks=chunks)
    return simulate(schedule, request.costs_for(schedule)).metrics()


def run_points(points: list[SweepPoint]) -> list[dict[str, Any]]:
    """Rows of a batch of points (what one worker task runs)."""
    return [run_point(point) for point in points]


def batches(points: list[SweepPoint], jobs: int) -> list[list[SweepPoint]]:
    """About eight batches per worker: few round trips, and the last ones still spread over all workers."""
    size = max(1, -(-len(points) // (8 * max(1, jobs))))  # ceiling: at most 8 x jobs batches
    return [points[start : start + size] for start in range(0, len(points), size)]


def run_sweep(
    points: list[SweepPoint],
    *,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    backend: str = "process",
    scheduler: str | None = None,
) -> list[dict[str, Any]]:
    """Rows in grid order; `jobs` > 1 runs batches of them on that many worker processes (or Dask
    workers). `progress(n)` is called as every n more points are done."""
    if backend == "dask":
        from simulator.sweep_dask import run_on_dask

        return run_on_dask(points, jobs=jobs, progress=progress, scheduler=scheduler)
    if jobs <= 1:
        rows = []
        for point in points:
            rows.append(run_point(point))
            if progress:
                progress(1)
        return rows
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        parts = batches(points, jobs)
        futures = [pool.submit(run_points, part) for part in parts]
        if progress:
            for future, part in zip(futures, parts, strict=True):
                future.add_done_callback(partial(_advance, progress, len(part)))
        return [row for future in futures for row in future.result()]


def _advance(progress: Callable[[int], None], done: int, _future: object) -> None:
    progress(done)


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
        self.shown = 0  # tenths printed so far (off a terminal)

    def __call__(self, done: int = 1) -> None:
        self.done += done
        tenths = 10 * self.done // max(1, self.total)
        if self.terminal or self.done == self.total or tenths > self.shown:
            self.shown = tenths
            filled = self.width * self.done // max(1, self.total)
            bar = "#" * filled + "." * (self.width - filled)
            end = "\r" if self.terminal and self.done < self.total else "\n"
            self.stream.write(f"{self.label} [{bar}] {self.done}/{self.total}{end}")
            self.stream.flush()

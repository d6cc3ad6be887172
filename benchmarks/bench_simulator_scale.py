"""Simulator at scale (issue 11): a whole command against PyTorch's, millions of actions, 1,000-point sweeps.

    .venv/bin/python benchmarks/bench_simulator.py --only command,scale,sweep     # the full cases
    .venv/bin/python benchmarks/bench_simulator.py --only command,scale,sweep --quick

command  `pipesim simulate --schedule 1f1b -p 64 -m 1024 --tf 1 --tb 2 --latency 0 --json`, measured as a
         process (interpreter start and imports included), alternated with PyTorch's own lowering and
         unit-time simulation of the same 1F1B (`_add_send_recv` + `_simulate_comms_compute`, measured
         in this process, its import excluded). Ratios of medians: above 1, pipesim is faster.
scale    1F1B with P = 1024 and growing m on the columnar path (simulator/columnar): built, validated,
         simulated with costs, memory and staleness, summarised; one process per size, so each peak
         memory is its own. Time against actions on log-log axes, and the fitted exponent (1 = linear).
sweep    `pipesim sweep` over 1,000 configurations on every core (and on a local Dask cluster when Dask
         is installed): points per second.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["simulate", "--schedule", "1f1b", "-p", "64", "-m", "1024", "--tf", "1", "--tb", "2"]
COMMAND += ["--latency", "0", "--json"]
SCALE_COSTS = dict(
    forward=1e-3,
    backward=2e-3,
    optimizer_step=1e-4,
    latency=10e-6,
    bandwidth=25e9,
    activation_bytes=8 * 2**20,
    stash_bytes=64 * 2**20,
    weight_bytes=2**30,
)
"""Costs of the scale runs: millisecond stages, 8 MiB activations over 25 GB/s links, 1 GiB of weights."""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(arguments: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of `python -m pipesim ...` in a fresh process."""
    cpu, began = children_cpu(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipesim", *arguments], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return time.perf_counter() - began, children_cpu() - cpu, done.stdout


def torch_contender(ranks: int, microbatches: int):
    """PyTorch's lowering + simulation of our compute-only 1F1B, as a function to time (import done)."""
    from torch.distributed.pipelining import schedules as torch_schedules

    from schedules import build
    from schedules.ir import Kind

    kinds = {Kind.F: torch_schedules.FORWARD, Kind.B: torch_schedules.FULL_BACKWARD}
    compute = build("1f1b", ranks, microbatches, lowered=False)
    order = {
        rank: [torch_schedules._Action(a.stage, kinds[a.kind], a.microbatch) for a in actions]
        for rank, actions in enumerate(compute.actions)
    }

    def run() -> int:
        lowered = torch_schedules._add_send_recv({r: list(a) for r, a in order.items()}, lambda s: s, ranks)
        simulated = torch_schedules._simulate_comms_compute(lowered, lambda s: s, ranks)
        return max(len(steps) for steps in simulated.values())

    return run


def bench_command(repeats: int, quick: bool) -> None:
    arguments = list(COMMAND)
    ranks, microbatches = 64, 1024
    if quick:
        ranks, microbatches = 16, 128
        arguments[4], arguments[6] = str(ranks), str(microbatches)
    torch_run = torch_contender(ranks, microbatches)
    times: dict[str, list[tuple[float, float]]] = {"pipesim simulate (process)": [], "torch (in process)": []}
    makespan = steps = None
    for _ in range(repeats):  # alternate, so that a busy moment of the machine hits both alike
        wall, cpu, out = run_command(arguments)
        makespan = json.loads(out)["makespan"]
        times["pipesim simulate (process)"].append((wall, cpu))
        cpu, began = time.process_time(), time.perf_counter()
        steps = torch_run()
        times["torch (in process)"].append((time.perf_counter() - began, time.process_time() - cpu))
    print(f"command: pipesim {' '.join(arguments)}")
    print(
        f"  (makespan {makespan:g} s; torch's unit-time simulation: {steps} steps), {repeats} alternated runs"
    )
    rows = [("contender", "median wall s", "best wall s", "median CPU s")]
    for name, samples in times.items():
        walls, cpus = [w for w, _ in samples], [c for _, c in samples]
        rows.append(
            (name, f"{statistics.median(walls):.2f}", f"{min(walls):.2f}", f"{statistics.median(cpus):.2f}")
        )
    print_table(rows)
    ours, theirs = times["pipesim simulate (process)"], times["torch (in process)"]
    wall = statistics.median(w for w, _ in theirs) / statistics.median(w for w, _ in ours)
    cpu = statistics.median(c for _, c in theirs) / statistics.median(c for _, c in ours)
    print(f"  torch / pipesim: {wall:.2f}x wall, {cpu:.2f}x CPU (above 1: the pipesim command is faster)\n")


def scale_one(name: str, ranks: int, microbatches: int) -> dict:
    """One scale run in this process: seconds per phase, actions, peak memory (run in a child)."""
    from simulator.columnar.check import check_columns
    from simulator.columnar.engine import run_columns
    from simulator.columnar.generate import lowered_columns
    from simulator.columnar.memory import memory_columns
    from simulator.columnar.plan import plan_columns
    from simulator.columnar.summary import column_metrics
    from simulator.costs import CostModel

    costs = CostModel.uniform(**SCALE_COSTS)
    phases: dict[str, float] = {}
    cpus: dict[str, float] = {}
    cpu = time.process_time()

    def timed(phase: str, function):
        began, used = time.perf_counter(), time.process_time()
        result = function()
        phases[phase], cpus[phase] = time.perf_counter() - began, time.process_time() - used
        return result

    columns = timed("build", lambda: lowered_columns(name, ranks, microbatches))
    timed("check", lambda: check_columns(columns))
    plan = timed("plan", lambda: plan_columns(columns, costs))
    starts, ends = timed("engine", lambda: run_columns(plan))
    memory = timed("memory", lambda: memory_columns(columns, costs, plan, ends))
    metrics = timed("summary", lambda: column_metrics(plan, starts, ends, memory))
    compute = int(np.count_nonzero(columns.kind < 4))  # codes 0..3: F, B, I, W
    return {
        "actions": len(columns),
        "compute": compute,
        "phases": phases,
        "cpu": time.process_time() - cpu,
        "phase_cpu": cpus,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "bubble": metrics.bubble_fraction,
        "peak_memory_gib": max(m for m in metrics.peak_memory if m is not None) / 2**30,
    }


def bench_scale(quick: bool) -> None:
    ranks, sizes = (64, [64, 128, 256, 512]) if quick else (1024, [512, 1024, 2048, 4096, 8192])
    print(f"scale: 1f1b, P = {ranks}, columnar path (simulator/columnar), one process per size")
    phases_shown = ("build", "check", "plan", "engine", "memory", "summary")
    rows = [("m", "compute", "actions", *phases_shown, "total s", "CPU s", "peak GiB")]
    points, cpu_points = [], []
    for microbatches in sizes:
        script = [sys.executable, __file__, "--scale-one", "1f1b", str(ranks), str(microbatches)]
        done = subprocess.run(script, capture_output=True, text=True, check=True, cwd=ROOT)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        phases = result["phases"]
        total = sum(phases.values())
        points.append((result["actions"], total))
        cpu_points.append((result["actions"], result["cpu"]))
        rows.append(
            (
                str(microbatches),
                f"{result['compute'] / 1e6:.2f}M",
                f"{result['actions'] / 1e6:.2f}M",
                *(f"{phases[p]:.2f}" for p in phases_shown),
                f"{total:.2f}",
                f"{result['cpu']:.2f}",
                f"{result['peak_gib']:.2f}",
            )
        )
    print_table(rows)
    print(loglog(points))
    fitted = f"wall ~ actions^{slope(points):.2f}, CPU ~ actions^{slope(cpu_points):.2f}"
    print(f"  fitted: {fitted}  (1.00 = linear; wall time is the machine's load as well)\n")


def slope(points: list[tuple[float, float]]) -> float:
    xs, ys = [math.log(a) for a, _ in points], [math.log(t) for _, t in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def loglog(points: list[tuple[float, float]], width: int = 50, height: int = 12) -> str:
    """Time against actions on log-log axes, as text: '*' per measured size."""
    xs, ys = [math.log10(a) for a, _ in points], [math.log10(t) for _, t in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    grid = [[" "] * (width + 1) for _ in range(height + 1)]
    for x, y in zip(xs, ys, strict=True):
        column = round((x - x0) / ((x1 - x0) or 1) * width)
        row = height - round((y - y0) / ((y1 - y0) or 1) * height)
        grid[row][column] = "*"
    lines = [f"  {10**y1:8.1f} s |" + "".join(grid[0])]
    lines += ["             |" + "".join(row) for row in grid[1:-1]]
    lines.append(f"  {10**y0:8.1f} s |" + "".join(grid[-1]))
    lines.append("             +" + "-" * (width + 1))
    lines.append(
        f"              {10**x0 / 1e6:.3g}M actions" + " " * (width - 26) + f"{10**x1 / 1e6:.3g}M (log-log)"
    )
    return "\n".join(lines)


def bench_sweep(quick: bool) -> None:
    grid = ["--schedules", "gpipe,1f1b,zb-h1,2bw,pipedream", "-p", "2,3,4,5,6,8,12,16"]
    grid += ["-m", ",".join(str(4 * k) for k in range(1, 26 if not quick else 4))]
    backends = ["process"]
    try:
        import dask.distributed  # noqa: F401

        backends.append("dask")
    except ImportError:
        print("sweep: Dask is not installed (pip install 'pipesim[dask]'): the process pool alone")
    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            arguments = ["sweep", *grid, "--out", str(Path(folder) / "sweep.csv"), "--backend", backend]
            cpu, began = children_cpu(), time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "pipesim", *arguments], capture_output=True, text=True, check=True
            )
            wall, cpu = time.perf_counter() - began, children_cpu() - cpu
        summary = done.stderr.strip().splitlines()[-1]
        rate = re.search(r"([\d.]+) points/s", summary)
        print(f"sweep ({backend}): {summary}")
        cores = os.cpu_count()
        print(f"  whole command {wall:.1f} s wall, {cpu:.1f} s CPU on {cores} cores; {rate[1]} points/s")
    print()


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.ljust(width) if c == 0 else cell.rjust(width)
            for c, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells))


if __name__ == "__main__" and sys.argv[1:2] == ["--scale-one"]:
    sys.path.insert(0, str(ROOT))
    name, ranks, microbatches = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(scale_one(name, ranks, microbatches)))

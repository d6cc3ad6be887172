"""How fast pipesim reads a large trace and computes its metrics (issue 7: a million events in seconds).

    .venv/bin/python benchmarks/bench_traces.py                 # about 1M events, 3 repeats
    .venv/bin/python benchmarks/bench_traces.py --quick         # about 100k events, a smoke run

The trace is made as a user makes one: `pipesim simulate --schedule 1f1b ... --trace T.json` (unit
costs, the comm-lowered 1F1B of P ranks and m microbatches). Then, alternating, `repeats` times each:

- in process: `traces.io.read_trace` (parse and validate, into columns), `traces.metrics.compute_metrics`,
  and the Event objects made on first use (what `calibrate`, the Chrome export and the dashboard's
  timeline iterate);
- as processes, import to exit, as a user runs them: `pipesim compare T C --json` with C a copy of T
  (both sides read and measured, the per-kind table, the order check), and `pipesim compare T T --json`
  (one file: read and measured once).

Prints events, file size, and the median and best of each, with CPU time beside wall time so a busy
machine shows as a gap between the two.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from traces.io import read_trace  # noqa: E402
from traces.metrics import compute_metrics  # noqa: E402

PIPESIM = [sys.executable, "-m", "pipesim"]
CASES = {
    "read": "read_trace (parse + validate)",
    "metrics": "compute_metrics",
    "objects": "Event objects, on first use",
    "compare": "`pipesim compare T C --json` (process)",
    "compare-same": "`pipesim compare T T --json` (process)",
}


def make_trace(path: Path, ranks: int, microbatches: int) -> float:
    """Simulate 1F1B into `path` with the CLI; returns the command's wall seconds."""
    command = [*PIPESIM, "simulate", "--schedule", "1f1b", "-p", str(ranks), "-m", str(microbatches)]
    command += ["--tf", "1", "--tb", "2", "--latency", "0", "--trace", str(path)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_process(command: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one command run to its end."""
    cpu, start = children_cpu(), time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, children_cpu() - cpu


def timed_call(function) -> tuple[float, float, object]:
    cpu, start = time.process_time(), time.perf_counter()
    result = function()
    return time.perf_counter() - start, time.process_time() - cpu, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 100k events")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ranks, microbatches = (16, 1024) if args.quick else (32, 5200)
    samples: dict[str, list[tuple[float, float]]] = {key: [] for key in CASES}
    with tempfile.TemporaryDirectory() as folder:
        path, copy = Path(folder) / "trace.json", Path(folder) / "copy.json"
        made = make_trace(path, ranks, microbatches)
        shutil.copyfile(path, copy)
        for _ in range(args.repeats):
            wall, cpu, trace = timed_call(lambda: read_trace(path))
            samples["read"].append((wall, cpu))
            wall, cpu, _ = timed_call(lambda trace=trace: compute_metrics(trace))
            samples["metrics"].append((wall, cpu))
            wall, cpu, _ = timed_call(lambda trace=trace: tuple(trace.events))
            samples["objects"].append((wall, cpu))
            del trace  # the next read starts from the same free memory
            for key, other in (("compare", copy), ("compare-same", path)):
                samples[key].append(timed_process([*PIPESIM, "compare", str(path), str(other), "--json"]))
        events = len(read_trace(path).events)
        size = path.stat().st_size
    print(f"1F1B P={ranks} m={microbatches}: {events:,} events, {size / 2**20:.0f} MiB of JSON")
    print(f"made by `pipesim simulate ... --trace` in {made:.1f} s wall")
    print(f"{'case':42} {'median wall':>12} {'best wall':>10} {'median CPU':>11}")
    for key, label in CASES.items():
        walls = [wall for wall, _ in samples[key]]
        cpus = [cpu for _, cpu in samples[key]]
        line = f"{statistics.median(walls):11.2f}s {min(walls):9.2f}s {statistics.median(cpus):10.2f}s"
        print(f"{label:42} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

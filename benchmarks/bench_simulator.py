"""Simulator speed: the engine beside a bare list scheduler and PyTorch's, whole commands, scale, sweeps.

    .venv/bin/python benchmarks/bench_simulator.py              # every section, full cases (minutes)
    .venv/bin/python benchmarks/bench_simulator.py --quick      # small cases, a smoke run
    .venv/bin/python benchmarks/bench_simulator.py --only command,scale --repeats 7

Sections: engine (below), and command, scale and sweep (benchmarks/bench_simulator_scale.py, issue 11).
The machine may be shared: every section alternates its contenders in one run and reports ratios.

engine: contenders, alternated within each repeat (best of the repeats is reported):

    engine        simulator: make_plan + run_plan + memory (simulate() without building the trace)
    engine+trace  the same plus the shared-format Trace (one Event object per action)
    heapq floor   a bare list scheduler over the same action lists: ranks in a heap keyed by their clock,
                  one pop per action, the same link FIFO; its own dictionary-based resolution included
    reference     simulator/reference.py, the textbook SimPy model (a Timeout per action, a Resource per
                  link); timed once, it is the slow baseline the engine was built to beat
    torch         torch.distributed.pipelining.schedules._simulate_comms_compute on the same 1F1B lists
                  (no OPT, which it does not know); unit time steps, no costs

Goal (issue 3): engine >= 250k actions/s, within 4x of the heapq floor, ahead of torch.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from schedules import build
from schedules.ir import RECV_KINDS, SEND_KINDS, Kind, Schedule
from simulator.costs import CostModel
from simulator.engine import run_plan
from simulator.plan import make_plan
from simulator.reference import run_reference
from simulator.simulation import simulate

COSTS = CostModel.uniform(
    forward=1e-3,
    backward=2e-3,
    optimizer_step=1e-4,
    latency=10e-6,
    bandwidth=25e9,
    activation_bytes=8 * 2**20,
    stash_bytes=64 * 2**20,
    weight_bytes=2**30,
)
FULL = [("gpipe", 64, 1024, 1), ("2bw", 64, 512, 4), ("1f1b", 64, 512, 1)]
QUICK = [("gpipe", 16, 64, 1), ("2bw", 16, 32, 2), ("1f1b", 16, 32, 1)]


def heapq_floor(schedule: Schedule, costs: CostModel) -> float:
    """Time every action with a plain heap of (clock, rank); returns the makespan.

    Same model as the engine with overlapped sends: compute advances the rank, a send holds its directed
    link (FIFO) for latency + bytes / bandwidth, a receive waits for the arrival.
    """
    table = {
        Kind.F: costs.stage(0).forward,
        Kind.B: costs.stage(0).backward,
        Kind.I: costs.stage(0).input_grad,
        Kind.W: costs.stage(0).weight_grad,
        Kind.OPT: costs.stage(0).optimizer_step,
    }
    transfer = {kind: costs.transfer_time(costs.stage(0).activation_bytes) for kind in SEND_KINDS}
    layout, ranks = schedule.layout, schedule.ranks
    arrival: dict[tuple, float] = {}
    parked: dict[tuple, int] = {}
    link_free: dict[tuple[int, int], float] = {}
    position, clock = [0] * ranks, [0.0] * ranks
    ends: list[list[float]] = [[] for _ in range(ranks)]  # the timeline, as the engine keeps it
    heap = [(0.0, rank) for rank in range(ranks)]
    while heap:
        now, rank = heapq.heappop(heap)
        actions = schedule.actions[rank]
        i = position[rank]
        if i == len(actions):
            continue
        action = actions[i]
        kind = action.kind
        if kind in RECV_KINDS:
            source = (
                layout.prev_stage(action.stage) if kind is Kind.RECV_F else layout.next_stage(action.stage)
            )
            key = (source, action.microbatch, action.step, kind)
            if key not in arrival:
                parked[key] = rank
                continue
            end = max(now, arrival[key])
        elif kind in SEND_KINDS:
            target = (
                layout.next_stage(action.stage) if kind is Kind.SEND_F else layout.prev_stage(action.stage)
            )
            link = (rank, layout.placement[target])
            begin = max(now, link_free.get(link, 0.0))
            link_free[link] = done = begin + transfer[kind]
            key = (
                action.stage,
                action.microbatch,
                action.step,
                Kind.RECV_F if kind is Kind.SEND_F else Kind.RECV_B,
            )
            arrival[key] = done
            if key in parked:
                waiter = parked.pop(key)
                heapq.heappush(heap, (clock[waiter], waiter))
            end = now
        else:
            end = now + table[kind]
        position[rank] = i + 1
        clock[rank] = end
        ends[rank].append(end)
        heapq.heappush(heap, (end, rank))
    return max(clock)


def torch_order(schedule: Schedule):
    from torch.distributed.pipelining import schedules as torch_schedules

    kinds = {
        Kind.F: torch_schedules.FORWARD,
        Kind.B: torch_schedules.FULL_BACKWARD,
        Kind.SEND_F: torch_schedules.SEND_F,
        Kind.RECV_F: torch_schedules.RECV_F,
        Kind.SEND_B: torch_schedules.SEND_B,
        Kind.RECV_B: torch_schedules.RECV_B,
    }
    order = {
        rank: [
            torch_schedules._Action(a.stage, kinds[a.kind], a.microbatch) for a in actions if a.kind in kinds
        ]
        for rank, actions in enumerate(schedule.actions)
    }
    ranks = schedule.ranks

    def run() -> None:
        torch_schedules._simulate_comms_compute(
            {r: list(a) for r, a in order.items()}, lambda s: s % ranks, ranks
        )

    return run, sum(map(len, order.values()))


def timed(function: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@dataclass(frozen=True)
class Result:
    case: str
    contender: str
    actions: int
    best: float
    """Seconds, best of the repeats."""
    median: float

    @property
    def rate(self) -> float:
        """Simulated actions per second."""
        return self.actions / self.best


def bench_case(name: str, ranks: int, microbatches: int, steps: int, repeats: int) -> list[Result]:
    """Check the contenders agree, then time them alternately, `repeats` times each."""
    schedule = build(name, ranks, microbatches, steps)
    actions = sum(map(len, schedule.actions))
    engine_makespan = run_plan(make_plan(schedule, COSTS)).makespan
    assert run_reference(make_plan(schedule, COSTS)).makespan == engine_makespan
    assert math.isclose(heapq_floor(schedule, COSTS), engine_makespan, rel_tol=1e-12)
    contenders: dict[str, tuple[Callable[[], object], int]] = {
        "engine": (lambda: simulate(schedule, COSTS), actions),
        "engine+trace": (lambda: simulate(schedule, COSTS).trace(), actions),
        "heapq floor": (lambda: heapq_floor(schedule, COSTS), actions),
    }
    if name == "1f1b" and steps == 1:
        contenders["torch"] = torch_order(schedule)
    times: dict[str, list[float]] = {key: [] for key in contenders}
    for _ in range(repeats):
        for key, (function, _) in contenders.items():
            times[key].append(timed(function))
    times["reference"] = [timed(lambda: run_reference(make_plan(schedule, COSTS)))]  # slow: once
    contenders["reference"] = (lambda: None, actions)
    case = f"{name} P={ranks} m={microbatches} x{steps}"
    return [
        Result(case, key, contenders[key][1], min(samples), statistics.median(samples))
        for key, samples in times.items()
    ]


def print_results(results: list[Result]) -> None:
    floor = {r.case: r.rate for r in results if r.contender == "heapq floor"}
    rows = [("case", "contender", "actions", "best s", "median s", "actions/s", "floor / it")]
    for r in results:
        rows.append(
            (
                r.case,
                r.contender,
                str(r.actions),
                f"{r.best:.3f}",
                f"{r.median:.3f}",
                f"{r.rate / 1e3:.0f}k",
                f"{floor[r.case] / r.rate:.2f}x",
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.rjust(width) if c > 1 else cell.ljust(width)
                for c, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    by = {(r.case, r.contender): r for r in results}
    for case in dict.fromkeys(r.case for r in results):
        if (case, "torch") in by:
            ratio = by[(case, "engine")].rate / by[(case, "torch")].rate
            print(f"\n{case}: engine {ratio:.2f}x torch's _simulate_comms_compute (actions/s)")


def memory_per_action(name: str, ranks: int, sizes: list[int]) -> list[tuple[int, float]]:
    """Peak traced bytes of simulate() per action, for growing m: flat means linear memory."""
    out = []
    for microbatches in sizes:
        schedule = build(name, ranks, microbatches)
        actions = sum(map(len, schedule.actions))
        tracemalloc.start()
        simulate(schedule, COSTS)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.append((actions, peak / actions))
    return out


SECTIONS = ("engine", "command", "scale", "sweep")


def bench_engine(quick: bool, repeats: int) -> None:
    results = [r for case in (QUICK if quick else FULL) for r in bench_case(*case, repeats=repeats)]
    print_results(results)
    print("\nmemory of simulate(), gpipe P=16 (peak traced bytes per action; flat = linear):")
    for actions, per_action in memory_per_action("gpipe", 16, [64, 256, 1024]):
        print(f"  {actions:>8} actions  {per_action:8.0f} B/action")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cases")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    import bench_simulator_scale as scale

    for section in chosen:
        if section == "engine":
            bench_engine(args.quick, args.repeats)
        elif section == "command":
            scale.bench_command(max(args.repeats, 3), args.quick)
        elif section == "scale":
            scale.bench_scale(args.quick)
        else:
            scale.bench_sweep(args.quick)


if __name__ == "__main__":
    main()

"""What recording the trace costs per action where actions are cheap: single-process runs (every rank in
this process, no communication: the cleanest place to see it) of bench_executor.py's overhead-bound
configuration, with the trace recorded and without (`--no-trace`). Prints a table.

    .venv/bin/python benchmarks/bench_recording.py                      # 1F1B, 20 rounds (a minute)
    .venv/bin/python benchmarks/bench_recording.py --schedule gpipe --rounds 40
    .venv/bin/python benchmarks/bench_recording.py --quick              # a smoke run

Two measurements:
- whole runs, recorded and not, alternating inside every round: CPU time (time.process_time) per action
  of the schedule, the minimum over rounds (the machine's other load only ever adds to it) and the
  median of the per-round differences; what recording costs in all, its effect on the caches included;
- its parts, timed in place with perf_counter_ns around each call (medians over every action of a few
  more rounds): counting the memory the rank holds (what the runtime does after each op; called here
  from the next op's before_op hook, on the same state), keeping the event (RankLog.event), and writing
  the kept events at the step boundary (RankLog.cut, recorded against not, per event).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from executor.interpreter.hooks import Hooks
from executor.run.assemble import Assembly
from executor.run.local import build_local, round_robin
from executor.run.runconfig import RunConfig
from executor.run.runfolder import RankLog
from executor.training.data import load_corpus
from executor.training.optim import OptimizerConfig


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", default="1f1b")
    parser.add_argument("--rounds", type=int, default=20, help="whole runs per variant (alternating)")
    parser.add_argument("--parts", type=int, default=3, help="runs per variant with the parts timed")
    parser.add_argument("--quick", action="store_true", help="2 steps, 2 rounds: a smoke run")
    return parser.parse_args(argv)


def config(args: argparse.Namespace, *, trace: bool) -> RunConfig:
    """bench_executor.py --hidden 16 --layers 2 --seq-len 8 --microbatch-size 1 --microbatches 32."""
    return RunConfig(
        trace=trace,
        schedule=args.schedule,
        stages=2,
        microbatches=32,
        steps=2 if args.quick else 8,
        layers=2,
        hidden=16,
        seq_len=8,
        microbatch_size=1,
        val_every=0,
        optimizer=OptimizerConfig(name="adamw", lr=1e-3),
    )


class Timed:
    """A rank log whose event and cut calls are timed (ns), and the memory count before each op."""

    def __init__(self, log: RankLog, times: dict[str, list[float]]) -> None:
        self.log, self.times, self.events = log, times, 0

    def event(self, *record) -> None:
        begin = time.perf_counter_ns()
        self.log.event(*record)
        self.times["event"].append(time.perf_counter_ns() - begin)
        self.events += 1

    def cut(self, step: int, at: float) -> None:
        begin = time.perf_counter_ns()
        self.log.cut(step, at)
        self.times["cut"].append(time.perf_counter_ns() - begin)

    def __getattr__(self, name: str):
        return getattr(self.log, name)  # loss, val, end: as they are


def one_run(assembly: Assembly, folder: Path, times: dict[str, list[float]] | None) -> float:
    """CPU seconds of one whole run, every rank in turn (the build not counted)."""
    logs = [RankLog(folder / f"rank{rank}-{time.monotonic_ns()}.jsonl", rank) for rank in range(2)]
    runtimes = []
    recorders = [Timed(log, times) if times is not None else log for log in logs]

    def hooks_for(rank: int) -> Hooks:
        def before_op(index: int, op) -> None:  # the state the previous op's event counted
            begin = time.perf_counter_ns()
            runtimes[rank].held_bytes()
            times["memory"].append(time.perf_counter_ns() - begin)

        return Hooks(recorder=recorders[rank], before_op=before_op if times is not None else None)

    runtimes.extend(build_local(assembly, hooks_for))
    for runtime in runtimes:
        runtime.program()
    begin = time.process_time()
    round_robin(runtimes)
    for runtime, log in zip(runtimes, logs, strict=True):
        runtime.finish()
        log.end("ok")
    return time.process_time() - begin


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    corpus = load_corpus()
    assemblies = {trace: Assembly(config(args, trace=trace), corpus=corpus) for trace in (True, False)}
    actions = sum(len(actions) for actions in assemblies[True].schedule.actions)
    folder = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    for trace in (True, False):  # warm-up: first calls, allocator
        one_run(assemblies[trace], folder, None)
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(2 if args.quick else args.rounds):
        for trace in (True, False) if round_ % 2 == 0 else (False, True):
            cpu[trace].append(one_run(assemblies[trace], folder, None) / actions)
    parts = {trace: {"event": [], "cut": [], "memory": []} for trace in (True, False)}
    for _ in range(1 if args.quick else args.parts):
        for trace in (True, False):
            one_run(assemblies[trace], folder, parts[trace])
    report(args, cpu, parts, actions)


def report(args, cpu: dict[bool, list[float]], parts: dict, actions: int) -> None:
    traced, bare = min(cpu[True]) * 1e6, min(cpu[False]) * 1e6
    paired = statistics.median(a - b for a, b in zip(cpu[True], cpu[False], strict=True)) * 1e6
    events, runs = len(parts[True]["event"]), 1 if args.quick else args.parts
    writing = (sum(parts[True]["cut"]) - sum(parts[False]["cut"])) / events / 1e3
    memory, keeping = (statistics.median(parts[True][name]) / 1e3 for name in ("memory", "event"))
    steps = 2 if args.quick else 8
    print(f"single process, {args.schedule}, P=2, m=32, microbatch 1x8, layers 2, hidden 16, {steps} steps")
    print(f"CPU per action, min over {len(cpu[True])} rounds: recorded {traced:.1f} us, not {bare:.1f} us")
    print(f"recording adds {traced - bare:+.1f} us per action ({traced / bare - 1:+.1%}); the median of")
    print(f"  the per-round differences {paired:+.1f} us")
    print(f"its parts, timed in place ({events // runs} events of {actions} actions a run):")
    print(f"  counting the memory the rank holds   {memory:5.2f} us (median)")
    print(f"  keeping the event                    {keeping:5.2f} us (median)")
    print(f"  writing the events at the step end   {writing:5.2f} us (mean per event, recorded against not)")


if __name__ == "__main__":
    measure(parse())

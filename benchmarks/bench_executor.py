"""Speed of the real executor on gloo CPU: our GPipe and 1F1B against torch.distributed.pipelining's
ScheduleGPipe and Schedule1F1B, our 2BW against our 1F1B, and each of ours without its trace. Prints a table.

    .venv/bin/python benchmarks/bench_executor.py
    .venv/bin/python benchmarks/bench_executor.py --stages 2 --microbatches 8 --steps 6 --rounds 5
    .venv/bin/python benchmarks/bench_executor.py --hidden 16 --layers 2 --seq-len 8 \\
        --microbatch-size 1 --microbatches 32 --steps 8 --rounds 15      # where each action is cheap

Same model split, same ranks, same microbatches, one thread per rank, each rank on a CPU of its own where
there are enough (as `pipesim run` places them; --no-pin leaves it to the OS). The variants alternate
inside every round (so a slow patch of the machine hits them all), and every comparison is the median over
rounds of the ratio measured within each round (its spread, the quartiles of those ratios, says how far to
trust it); the step times are medians over rounds. Goals: ours no slower than PyTorch's; 2BW at least 90%
of the ideal improvement over 1F1B, (gain - 1) / (ideal - 1), where the ideal gain over S steps is S(m + P
- 1) / (S m + P - 1): 2BW fills and drains the pipeline once, 1F1B once per step (it tends to (m + P - 1)
/ m in steady state). The share of the improvement, not gain / ideal: with the ideal near 1, gain / ideal
is near 90% even for a 2BW that gains nothing. Recording the trace should add under 5%.

"untraced" is our runtime as `pipesim run --no-trace` runs it: losses and step boundaries logged, no
per-action events. "CPU us/action" is the processor time a rank spends per action of its schedule
(forwards, backwards, sends, receives, updates: the mean over ranks), which the machine's load disturbs
far less than the wall clock: the untraced and traced columns differ by what recording costs, ours and
PyTorch's by what one runtime does per action beyond the other.

A second table says where each of our traced variants spends a step on each rank, from the events it
logged: compute (F, B, I, W, OPT), waiting (receives, the gradient norm's sum) and host time (the rest:
sends, the interpreter, recording); two schedules of the same work differ in the last two only.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ERROR_LINES = 30
"""Lines of each rank's stderr shown when a run fails (all of it stays in the kept folder)."""
VARIANTS = [
    ("ours", "gpipe"),
    ("torch", "gpipe"),
    ("ours", "1f1b"),
    ("torch", "1f1b"),
    ("ours", "2bw"),
    ("untraced", "gpipe"),
    ("untraced", "1f1b"),
    ("untraced", "2bw"),
]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--microbatch-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per variant (alternating)")
    parser.add_argument(
        "--variants",
        type=_variants,
        default=VARIANTS,
        help="who:schedule,... to run (default all: ours, torch and untraced with gpipe, 1f1b, 2bw as above)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the OS place the ranks' threads (default: each rank on a CPU of its own, as pipesim run)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _variants(text: str) -> list[tuple[str, str]]:
    """'ours:1f1b,ours:2bw' -> the variants it names, in the table's order (fewer: more rounds a minute)."""
    named = {tuple(item.split(":", 1)) for item in text.split(",")}
    unknown = sorted(named - set(VARIANTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant {':'.join(unknown[0])}; choose from {_names()}")
    return [variant for variant in VARIANTS if variant in named]


def _names() -> str:
    return ", ".join(f"{who}:{schedule}" for who, schedule in VARIANTS)


def run_config(args: argparse.Namespace, schedule: str, *, trace: bool = True):
    from executor.run.runconfig import RunConfig
    from executor.training.optim import OptimizerConfig

    return RunConfig(
        trace=trace,
        schedule=schedule,
        stages=args.stages,
        microbatches=args.microbatches,
        steps=args.steps,
        layers=args.layers,
        hidden=args.hidden,
        seq_len=args.seq_len,
        microbatch_size=args.microbatch_size,
        val_every=0,
        optimizer=OptimizerConfig(name="adamw", lr=1e-3),
    )


class Ours:
    """Our runtime for one schedule, rebuilt for every measurement (the build is not timed)."""

    def __init__(self, args, schedule: str, corpus, rank: int, log_dir: Path, *, trace: bool = True) -> None:
        from executor.run.assemble import Assembly

        self.assembly = Assembly(run_config(args, schedule, trace=trace), corpus=corpus)
        self.rank, self.log = rank, log_dir / f"{schedule}-{trace}-rank{rank}.jsonl"
        self.actions = len(self.assembly.schedule.actions[rank]) / args.steps

    def prepare(self):
        from executor.interpreter.comm import DistTransport
        from executor.interpreter.hooks import Hooks
        from executor.run.runfolder import RankLog

        self.logged = self.log.stat().st_size if self.log.exists() else 0  # this run's events come after
        recorder = RankLog(self.log, self.rank)  # as in a real run: every action logged (unless untraced)
        self.runtime = self.assembly.runtime(self.rank, DistTransport(), hooks=Hooks(recorder=recorder))
        self.runtime.program()  # built once per run (as PyTorch's schedule is, on its first step)

    def run(self) -> None:
        self.runtime.run()
        self.runtime.mailman.finish()
        self.runtime.recorder.end("ok")

    def parts(self) -> tuple[float, float, float]:
        """Where the last run's time went on this rank (after it, untimed): from its logged events."""
        with self.log.open("rb") as log:
            log.seek(self.logged)
            events = [json.loads(line) for line in log if line.startswith(b'{"t":"event"')]
        return split_span([(event["a"], event["s"], event["e"]) for event in events])


def _kind_sets() -> tuple[frozenset[str], frozenset[str]]:
    """The action codes split_span counts as compute and as waiting, from the IR's kind sets."""
    from executor.interpreter.program import NORM
    from schedules.ir import COMPUTE_KINDS, RECV_KINDS, Kind

    compute = frozenset(str(kind) for kind in COMPUTE_KINDS | {Kind.OPT, Kind.OVERLAP_F_B})
    return compute, frozenset(str(kind) for kind in RECV_KINDS) | {NORM}


def split_span(events: list[tuple[str, float, float]]) -> tuple[float, float, float]:
    """(compute, waiting, host) seconds of one rank's run from its events (action text, start, end):
    compute is F, B, I, W and OPT; waiting is receives and the gradient norm's sum over ranks; host is
    the rest of the span from its first start to its last end (sends, the interpreter, recording)."""
    if not events:
        return 0.0, 0.0, 0.0
    computing, waits = _kind_sets()
    compute = waiting = 0.0
    for action, start, end in events:
        kind = re.match(r"\d*([A-Z_]+)", action).group(1)
        if kind in computing:
            compute += end - start
        elif kind in waits:
            waiting += end - start
    span = max(end for _, _, end in events) - min(start for _, start, _ in events)
    return compute, waiting, span - compute - waiting


class Torch:
    """torch.distributed.pipelining on the same stage module, optimizer and batches."""

    def __init__(self, args, schedule: str, corpus, rank: int, log_dir: Path) -> None:
        import torch
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        from executor.training.model import build_stages, loss_fn
        from executor.training.optim import make_optimizer

        self.args, self.corpus, self.rank = args, corpus, rank
        config = run_config(args, schedule)
        module = build_stages(config.model_config, args.stages, seed=0)[rank]
        stage = PipelineStage(module, rank, args.stages, torch.device("cpu"))
        kind = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
        self.schedule = kind(stage, args.microbatches, loss_fn=loss_fn)
        self.optimizer = make_optimizer(config.optimizer, module, stage=rank, stages=args.stages)
        self.actions = len(config.build_schedule().actions[rank]) / args.steps  # the same actions as ours

    def prepare(self) -> None:
        return None

    def batch(self, step: int):
        import torch

        parts = [
            self.corpus.batch(
                "train",
                step=step,
                microbatch=j,
                microbatch_size=self.args.microbatch_size,
                seq_len=self.args.seq_len,
                seed=0,
            )
            for j in range(self.args.microbatches)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def run(self) -> None:
        last = self.args.stages - 1
        for step in range(self.args.steps):
            inputs, targets = self.batch(step)
            if self.rank == 0:
                self.schedule.step(inputs)
            elif self.rank == last:
                self.schedule.step(target=targets, losses=[])
            else:
                self.schedule.step()
            self.optimizer.step(step)
            self.optimizer.zero_grad()


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from executor.run.cpus import pin_rank
    from executor.run.runconfig import RunConfig
    from executor.training.data import load_corpus

    faulthandler.enable()  # a crash (SIGABRT, SIGSEGV) prints every thread's Python stack first
    args.pinned = pin_rank(RunConfig(stages=args.stages, pin=args.pin)) is not None  # before gloo's threads
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    corpus = load_corpus()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    variants = args.variants
    runners = {(who, s): make_runner(args, who, s, corpus, rank, log_dir) for who, s in variants}
    for runner in runners.values():  # warm-up: first-call costs, torch's shape inference
        runner.prepare()
        runner.run()
    times: dict[tuple[str, str], list[float]] = {variant: [] for variant in variants}
    cpu: dict[tuple[str, str], list[float]] = {variant: [] for variant in variants}
    parts: dict[tuple[str, str], list[list]] = {variant: [] for variant in variants if variant[0] == "ours"}
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]
        for variant in order:
            runners[variant].prepare()
            dist.barrier()
            start, busy = time.perf_counter(), time.process_time()
            runners[variant].run()
            busy = time.process_time() - busy
            dist.barrier()
            times[variant].append((time.perf_counter() - start) / args.steps)
            per_action = torch.tensor([busy / args.steps / runners[variant].actions], dtype=torch.float64)
            dist.all_reduce(per_action)
            cpu[variant].append(float(per_action) / dist.get_world_size())
            if variant in parts:  # every rank's (compute, waiting, host), to rank 0
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, runners[variant].parts())
                parts[variant].append(gathered)
    if rank == 0:
        print_table(args, Measured(times=times, cpu=cpu))
        print_parts(args, parts)
    dist.destroy_process_group()


def make_runner(args, who: str, schedule: str, corpus, rank: int, log_dir: Path):
    if who == "torch":
        return Torch(args, schedule, corpus, rank, log_dir)
    return Ours(args, schedule, corpus, rank, log_dir, trace=who == "ours")


class Measured:
    """Every round's step time (s) and CPU time per action (s, mean over ranks), per variant."""

    def __init__(self, *, times: dict, cpu: dict | None = None) -> None:
        self.times, self.cpu = times, cpu or {}

    def step(self, variant) -> float:
        return statistics.median(self.times[variant])

    def ratio(self, slower, faster) -> tuple[float, float, float]:
        """The median and quartiles over rounds of time(slower) / time(faster), paired by round."""
        ratios = sorted(a / b for a, b in zip(self.times[slower], self.times[faster], strict=True))
        if len(ratios) < 2:
            return ratios[0], ratios[0], ratios[0]
        low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return statistics.median(ratios), low, high


def print_table(args: argparse.Namespace, measured: Measured | dict) -> None:
    """The table; `measured` may also be {variant: step seconds} (one round: no spread)."""
    if not isinstance(measured, Measured):
        measured = Measured(times={variant: [value] for variant, value in measured.items()})
    P, m = args.stages, args.microbatches
    tokens = m * args.microbatch_size * args.seq_len
    print(
        f"gloo CPU, P={P}, m={m}, microbatch {args.microbatch_size}x{args.seq_len} tokens, "
        f"layers {args.layers}, hidden {args.hidden}, {args.steps} steps x {args.rounds} rounds (median), "
        f"ranks {'pinned' if getattr(args, 'pinned', False) else 'unpinned'}"
    )
    print(
        f"{'variant':<16} {'step ms':>9} {'range ms':>11} {'tokens/s':>10} {'CPU us/action':>14}  comparison"
    )
    for variant in (v for v in VARIANTS if v in measured.times):
        who, schedule = variant
        value, values = measured.step(variant), measured.times[variant]
        spread = f"{min(values) * 1e3:.0f}-{max(values) * 1e3:.0f}"
        busy = f"{statistics.median(measured.cpu[variant]) * 1e6:.0f}" if variant in measured.cpu else "-"
        row = (
            f"{who + ' ' + schedule:<16} {value * 1e3:>9.1f} {spread:>11} {tokens / value:>10,.0f} {busy:>14}"
        )
        print(f"{row}  {comparison(args, measured, variant)}")


def print_parts(args: argparse.Namespace, parts: dict[tuple[str, str], list[list]]) -> None:
    """Where our traced variants spend a step on each rank: medians over rounds of compute, waiting for
    a message and host time (the rest), in ms per step; what differs between two schedules of the same
    work is waiting and host time, and this says on which rank."""
    if not any(parts.values()):
        return
    print("\nwhere a step goes (ms per step, medians over rounds; from each rank's events)")
    print(f"{'variant':<16} {'rank':>4} {'compute':>9} {'waiting':>9} {'host':>9}")
    for (who, schedule), rounds in parts.items():
        for rank in range(len(rounds[0])):
            cells = [statistics.median(r[rank][part] for r in rounds) / args.steps * 1e3 for part in range(3)]
            print(f"{who + ' ' + schedule:<16} {rank:>4} " + " ".join(f"{cell:>9.2f}" for cell in cells))


def comparison(args: argparse.Namespace, measured: Measured, variant: tuple[str, str]) -> str:
    who, schedule = variant
    times = measured.times
    if who == "ours" and schedule != "2bw" and ("torch", schedule) in times:
        ratio, low, high = measured.ratio(("torch", schedule), variant)
        return f"{ratio:.2f}x PyTorch's speed (goal >= 1; quartiles over rounds {low:.2f}-{high:.2f})"
    if who == "ours" and schedule == "2bw" and ("ours", "1f1b") in times:
        (gain, low, high), m, P = measured.ratio(("ours", "1f1b"), variant), args.microbatches, args.stages
        ideal = ideal_gain(m, P, args.steps)
        return (
            f"gain over 1F1B {gain:.3f}; ideal over {args.steps} steps S(m+P-1)/(Sm+P-1) = {ideal:.3f} "
            f"((m+P-1)/m = {(m + P - 1) / m:.3f} in steady state): {improvement_share(gain, ideal):.0%} of "
            f"the ideal improvement, (gain-1)/(ideal-1) (goal >= 90%; gain's quartiles {low:.3f}-{high:.3f})"
        )
    if who == "untraced" and ("ours", schedule) in times:
        ratio, low, high = measured.ratio(("ours", schedule), variant)
        cost = ""
        if variant in measured.cpu:
            traced, bare = (statistics.median(measured.cpu[w, schedule]) for w in ("ours", "untraced"))
            cost = f"; {(traced - bare) * 1e6:+.1f} us CPU per action"
        return (
            f"recording the trace adds {ratio - 1:+.1%} to the step time (goal < 5%; quartiles "
            f"{low - 1:+.1%}, {high - 1:+.1%}){cost}"
        )
    return ""


def ideal_gain(microbatches: int, stages: int, steps: int) -> float:
    """2BW over 1F1B with no bubble left: 1F1B fills and drains every step, 2BW once per run."""
    m, P, S = microbatches, stages, steps
    return S * (m + P - 1) / (S * m + P - 1)


def improvement_share(gain: float, ideal: float) -> float:
    """How much of the ideal improvement a gain realises: 0 for no gain, 1 for the ideal."""
    return (gain - 1) / (ideal - 1)


def main(argv: list[str] | None = None) -> int:
    from executor.run.launch import free_port

    args = parse(argv)
    if args.worker:  # a rank: leave without the interpreter's teardown of torch, as executor.worker does
        worker(args)  # (a rank aborted there now and then, after the table: "terminate called without an
        sys.stdout.flush()  # active exception", no Python frame, in 3 of about 40 runs on 2 cores)
        sys.stderr.flush()
        os._exit(0)
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={args.stages}"]
    port = f"--master-port={free_port()}"
    logs = Path(tempfile.mkdtemp(prefix="pipesim-bench-executor-logs-"))
    command += ["--master-addr=127.0.0.1", port, "--max-restarts=0", f"--log-dir={logs}", "--redirects=3"]
    command += [__file__, "--worker", *(argv if argv is not None else sys.argv[1:])]
    code = subprocess.run(command, env=env, check=False).returncode
    return report_ranks(logs, code)


def report_ranks(logs: Path, code: int) -> int:
    """Replay rank 0's output (the table); when torchrun failed, also the end of every rank's stderr, and
    keep the folder with all of it (a terminal's scrollback loses what names the cause)."""
    outputs = sorted(logs.glob("*/attempt_*/*/stdout.log"))  # torchrun's log-dir/<run>/attempt_0/<rank>/
    if outputs:
        sys.stdout.write(outputs[0].read_text(errors="replace"))
    if not code:
        shutil.rmtree(logs, ignore_errors=True)
        return 0
    for stderr in sorted(logs.glob("*/attempt_*/*/stderr.log")):
        tail = stderr.read_text(errors="replace").splitlines()[-ERROR_LINES:]
        print(f"--- rank {stderr.parent.name}, last lines of {stderr}:", *tail, sep="\n", file=sys.stderr)
    print(f"bench_executor: torchrun exited with {code}; the ranks' output is in {logs}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

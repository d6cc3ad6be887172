"""One rank of a real run, started by torchrun (torch.distributed.run), one process per rank.

    torchrun --nproc-per-node 2 -m executor.worker --run-dir runs/NAME [--resume-from CHECKPOINT]

It reads runs/NAME/config.json (written by `pipesim run` or `pipesim run --prepare`), joins the process
group (gloo on CPU, NCCL on CUDA, plus a gloo group for the clock), estimates its clock offset to rank 0,
runs its program and appends to runs/NAME/ranks/rank<r>.jsonl as it goes.

Started by `pipesim run` (PIPESIM_LAUNCHER_PID set), the launcher holds the folder's lock and assembles
metrics.jsonl and trace.json. Started through torchrun by hand, rank 0 does both: it locks the folder
(another run on it: one line, exit 2), follows every rank's log as the run goes (executor.run.collect) and
writes the trace when it ends, so the folder is the same as `pipesim run` leaves.

Never hang: the watchdog (executor.run.watchdog) stops the process when one op has run longer than the
config's timeout, or when torchrun or the launcher is gone; a receive whose peer died fails at once or
after the timeout and a margin (so a stalled rank says so first); an error while setting up is logged
with its phase. Either way the log ends with
{"t": "end", "status": "error", "op": ..., "message": ...} and the process exits non-zero, which makes
torchrun stop the other ranks.

A rank that crashes (a signal such as SIGABRT or SIGSEGV, from torch or below) writes the Python stack of
every thread to its stderr first (faulthandler), which `pipesim run` keeps in launcher.log.

Test hook (tests only, not a user feature): PIPESIM_FAULT="<rank>:<op>:<exit|sleep|abort>" makes that
rank exit, sleep for good, or abort (SIGABRT) right before running that op (e.g. "1:1F2@s1v1:exit").
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from executor.interpreter.comm import DistTransport
from executor.interpreter.entries import RECV_OPS
from executor.interpreter.hooks import Hooks
from executor.interpreter.program import NORM
from executor.interpreter.runtime import Runtime
from executor.run.assemble import Assembly
from executor.run.checkpoint_files import checkpoint_step, checkpoint_time
from executor.run.collect import Collector
from executor.run.cpus import pin_rank
from executor.run.runconfig import RunConfig
from executor.run.runfolder import FolderLock, RankLog, RunFolder, new_segment, one_line
from executor.run.watchdog import WAIT_MARGIN, Watchdog, stop
from schedules.errors import UserError

FAULT_ENV = "PIPESIM_FAULT"
WAITING_KINDS = RECV_OPS | {NORM}
"""Ops that wait for a peer (their limit has the margin)."""
LAUNCHER_ENV = "PIPESIM_LAUNCHER_PID"
"""Set by `pipesim run` for its ranks: its pid (they stop when it is gone; it holds the lock)."""
SEGMENT_ENV = "PIPESIM_SEGMENT"
"""Set by `pipesim run` for its ranks: the launch's id in the rank logs (rank 0 sends it otherwise)."""


class Clock:
    """perf_counter_ns on this rank, shifted onto rank 0's clock, in seconds from the common zero."""

    def __init__(self, offset_ns: int = 0, zero_ns: int = 0) -> None:
        self.offset_ns, self.zero_ns = offset_ns, zero_ns

    def now(self) -> float:
        return self.at(time.perf_counter_ns())

    def at(self, counter_ns: int) -> float:
        """A perf_counter_ns reading on this clock (with the offset and zero in force now)."""
        return (counter_ns - self.offset_ns - self.zero_ns) / 1e9


class CudaTimer:
    """CUDA events around the compute ops, turned into times on the common clock in batches (at every
    step boundary and at the end), so timing never stalls the device; the last stage's losses are read
    back in the same batch (executor.interpreter.runtime), not one synchronisation per microbatch."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        torch.cuda.synchronize()
        self.base = torch.cuda.Event(enable_timing=True)
        self.base.record()
        torch.cuda.synchronize()
        self.base_ns = time.perf_counter_ns()
        """When `base` was reached, read on the host; turned into clock time only when an event is, so
        a zero moved after this timer was made (step 0's start, a resume's shift) applies to it too."""
        self.pending: list[tuple] = []

    def begin(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def later(self, start, end, emit) -> None:
        self.pending.append((start, end, emit))

    def flush(self) -> None:
        torch.cuda.synchronize()
        for start, end, emit in self.pending:
            emit(self.at(start), self.at(end))
        self.pending = []

    def at(self, event) -> float:
        return self.clock.at(self.base_ns) + self.base.elapsed_time(event) / 1e3


def sync_clock(clock: Clock, rank: int, world: int, group, rounds: int = 8) -> None:
    """NTP-style: rank 0 pings every rank, keeps the offset of the fastest round trip, tells it."""
    stamp = torch.zeros(1, dtype=torch.int64)
    if rank == 0:
        for peer in range(1, world):
            best = None
            for _ in range(rounds):
                t0 = time.perf_counter_ns()
                dist.send(torch.tensor([t0]), peer, group=group)
                dist.recv(stamp, peer, group=group)
                t1 = time.perf_counter_ns()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, int(stamp) - (t0 + t1) // 2)
            dist.send(torch.tensor([best[1]]), peer, group=group)
        offset = 0
    else:
        for _ in range(rounds):
            dist.recv(stamp, 0, group=group)
            dist.send(torch.tensor([time.perf_counter_ns()]), 0, group=group)
        dist.recv(stamp, 0, group=group)
        offset = int(stamp)
    zero = torch.tensor([time.perf_counter_ns()])
    dist.broadcast(zero, 0, group=group)
    clock.offset_ns, clock.zero_ns = offset, int(zero)


def fault_hook(rank: int, log: RankLog):
    """The PIPESIM_FAULT test hook for this rank, or None. An exit writes the log's kept records first,
    as every way out of a rank does (executor.run.runfolder.RankLog)."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    fault_rank, fault_op, mode = spec.split(":")
    if int(fault_rank) != rank:
        return None

    def hook(index: int, op) -> None:
        if str(op) == fault_op:
            if mode in ("exit", "abort"):
                log.flush()
                if mode == "abort":
                    os.abort()
                os._exit(3)
            while True:
                time.sleep(3600)

    return hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="executor.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="the run folder holding config.json")
    parser.add_argument("--resume-from", default=None, help="a checkpoint folder to start from")
    args = parser.parse_args(argv)
    faulthandler.enable()  # a crash leaves the Python stacks in the rank's stderr (launcher.log)
    folder = RunFolder(args.run_dir)
    if "RANK" not in os.environ:
        return _refuse(0, "executor.worker runs under torchrun (RANK is not set): see pipesim run --prepare")
    rank = int(os.environ["RANK"])
    try:
        config = folder.read_config()
        resume = checkpoint_step(Path(args.resume_from)) if args.resume_from else None
    except (OSError, ValueError, KeyError, TypeError, UserError) as error:
        return _refuse(rank, f"{args.run_dir}: cannot start from it ({one_line(error)})")
    pin_rank(config)  # before torch and gloo start their threads: they inherit its CPUs
    torch.set_num_threads(config.threads)
    launcher = os.environ.get(LAUNCHER_ENV)
    lock, segment = None, os.environ.get(SEGMENT_ENV)
    if launcher is None:  # started by hand: no launcher holds the folder; rank 0 takes it for the run
        lock, segment = _claim_by_hand(folder, config, rank)
        if lock is None:
            return 2
    log = RankLog(folder.rank_log(rank), rank, resume=resume, segment=segment)
    watchdog = Watchdog(rank, log, config.timeout, int(launcher) if launcher else None)
    setup = SetUp(rank, config, folder, log, watchdog, args.resume_from)
    runtime, control, collector = setup.run(joined=lock is not None)
    return _train(rank, config, runtime, control, log, watchdog, collector)


class SetUp:
    """Everything between the start and the first action, phase by phase: an error in any of them ends
    the rank with the phase and the error itself in its log (not a silent death)."""

    def __init__(self, rank, config: RunConfig, folder: RunFolder, log: RankLog, watchdog, resume_from):
        self.rank, self.config, self.folder, self.log = rank, config, folder, log
        self.watchdog, self.resume_from = watchdog, resume_from
        self.phase = "starting"

    def __call__(self, phase: str) -> None:
        self.phase = phase
        self.watchdog.idle(f"its set-up ({phase})")

    def run(self, *, joined: bool):
        try:
            return self._run(joined)
        except Exception as error:
            stop(self.rank, self.log, "set-up", f"{self.phase}: {one_line(error)}", 1)

    def _run(self, joined: bool):
        config, rank, cuda = self.config, self.rank, self.config.device == "cuda"
        self("joining the process group")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
        if not joined:
            dist.init_process_group("nccl" if cuda else "gloo", timeout=_wait_limit(config))
        control = _control_group(cuda)
        self("building its stages and optimizers")
        assembly = Assembly(config)
        stages = assembly.stages(rank, assembly.device(rank))
        clock = Clock()
        fault = fault_hook(rank, self.log)

        def before_op(index: int, op) -> None:
            self.watchdog.started(op, waiting=op.kind in WAITING_KINDS)
            if fault is not None:
                fault(index, op)

        collector = None
        if rank == 0 and os.environ.get(LAUNCHER_ENV) is None:
            collector = Collector(self.folder, config, assembly.schedule)
            self.watchdog.before_exit = lambda: collector.finish(wait=2.0)
            _stop_on_signals(collector)
        self("synchronising the clocks")
        sync_clock(clock, rank, dist.get_world_size(), control)  # after the set-up: step 0 is timed from here
        timer = CudaTimer(clock) if cuda else None
        resume_from = Path(self.resume_from) if self.resume_from else None
        self("building its interpreter")
        if resume_from is not None:
            self(f"restoring checkpoint {resume_from.name}")
            clock.zero_ns -= int(checkpoint_time(resume_from, dist.get_world_size()) * 1e9)  # time goes on
        runtime = assembly.runtime(
            rank,
            DistTransport(),
            hooks=Hooks(recorder=self.log, clock=clock.now, timer=timer, before_op=before_op),
            stages=stages,
            checkpoints=self.folder.checkpoints,
            resume_from=resume_from,
            timeout=_wait_limit(config).total_seconds(),
        )
        return runtime, control, collector


def _train(rank: int, config: RunConfig, runtime: Runtime, control, log: RankLog, watchdog, collector) -> int:
    """Run the program to its end; any error ends the rank with the action it was on."""
    before_exit = (lambda: collector.finish(wait=2.0)) if collector is not None else None
    try:
        runtime.run()
        runtime.finish()
        watchdog.started("the final sends", waiting=True)
        runtime.mailman.finish(_wait_limit(config).total_seconds())
        watchdog.idle("the end")
        log.end("ok")
        dist.barrier(group=control)
    except Exception as error:  # a peer died or a receive timed out: say where, then leave
        op = runtime.plan.ops[runtime.index] if not runtime.done else "the end of its program"
        stop(rank, log, op, one_line(error), 1, before_exit)
    completed = collector.finish(wait=config.timeout) if collector is not None else True
    dist.destroy_process_group()
    return 0 if completed else 1


class Terminated(Exception):
    """A stop signal reached rank 0 of a hand-started run (torchrun passes on its own stop as SIGTERM)."""


def _stop_on_signals(collector: Collector) -> None:
    """Rank 0 of a hand-started run: a SIGTERM (or SIGINT) becomes an error in the main thread, so the
    rank ends like any failed one and writes the trace first; a second one, while it writes, waits."""

    def handler(number: int, frame) -> None:
        if not collector.finishing:
            raise Terminated(f"stopped by {signal.Signals(number).name}")

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, handler)


def _wait_limit(config: RunConfig) -> timedelta:
    """How long a rank waits for a peer: --timeout and a margin (executor.run.watchdog.WAIT_MARGIN)."""
    return timedelta(seconds=config.timeout + WAIT_MARGIN)


def _control_group(cuda: bool):
    """A gloo group for the clock and the barriers (NCCL's default group needs every rank's GPU)."""
    if not cuda:
        return None
    control = dist.new_group(backend="gloo")
    dist.all_reduce(torch.zeros(1, device="cuda"))  # the NCCL communicator, every rank present
    return control


def _claim_by_hand(folder: RunFolder, config: RunConfig, rank: int):
    """A run started through torchrun by hand: join the group; rank 0 locks the folder and tells the
    others the verdict and the launch's id. (lock or True, id); (None, None) when another run owns the
    folder (rank 0 has said so in one line)."""
    cuda = config.device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=_wait_limit(config))
    lock, verdict = None, [None, new_segment()]
    if rank == 0:
        try:
            lock = FolderLock(folder, "torchrun started by hand, rank 0")
        except (UserError, OSError) as error:
            verdict[0] = str(error)
    group = dist.new_group(backend="gloo") if cuda else None
    dist.broadcast_object_list(verdict, src=0, group=group)
    if verdict[0] is not None:
        if rank == 0:
            _refuse(rank, verdict[0])
        dist.destroy_process_group()
        return None, None
    return lock or True, verdict[1]


def _refuse(rank: int, message: str) -> int:
    print(f"pipesim: error: {message}", file=sys.stderr, flush=True)
    return 2


def run_as_main() -> None:
    """`python -m executor.worker` (executor/worker.py): main, then leave without the interpreter's slow
    teardown of torch (everything is written and closed by then)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

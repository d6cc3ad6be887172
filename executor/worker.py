"""One rank of a real run, started by torchrun (torch.distributed.run), one process per rank.

    torchrun --nproc-per-node 2 -m executor.worker --run-dir runs/NAME

It reads runs/NAME/config.json (written by `pipesim run`), joins the process group (gloo on CPU, NCCL on
CUDA, plus a gloo group for the clock), estimates its clock offset to rank 0, runs its program and writes
runs/NAME/ranks/rank<r>.jsonl as it goes.

Never hang: a watchdog thread stops the process when one op has run longer than the config's timeout,
naming the rank and the op; a receive whose peer died fails at once or after the same timeout. Either
way the log ends with {"t": "end", "status": "error", "op": ..., "message": ...} and the process exits
non-zero, which makes torchrun stop the other ranks.

Test hook (tests only, not a user feature): PIPESIM_FAULT="<rank>:<op>:<exit|sleep>" makes that rank
exit, or sleep for good, right before running that op (e.g. "1:1F2@s1v1:exit").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from executor.assemble import Assembly
from executor.comm import DistTransport
from executor.runfolder import RankLog, RunFolder
from executor.runtime import Runtime

FAULT_ENV = "PIPESIM_FAULT"


class Clock:
    """perf_counter_ns on this rank, shifted onto rank 0's clock, in seconds from the common zero."""

    def __init__(self, offset_ns: int = 0, zero_ns: int = 0) -> None:
        self.offset_ns, self.zero_ns = offset_ns, zero_ns

    def now(self) -> float:
        return (time.perf_counter_ns() - self.offset_ns - self.zero_ns) / 1e9


class CudaTimer:
    """CUDA events around the compute ops, turned into times on the common clock in batches (at every
    step boundary and at the end), so timing never stalls the device."""

    def __init__(self, clock: Clock) -> None:
        torch.cuda.synchronize()
        self.base = torch.cuda.Event(enable_timing=True)
        self.base.record()
        torch.cuda.synchronize()
        self.base_time = clock.now()
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
        return self.base_time + self.base.elapsed_time(event) / 1e3


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


class Watchdog:
    """Stops the process when the current op has run for more than `timeout` seconds."""

    def __init__(self, runtime: Runtime, log: RankLog, timeout: float) -> None:
        self.runtime, self.log, self.timeout = runtime, log, timeout
        self.current: tuple[object, float] | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def started(self, index: int, op) -> None:
        self.current = (op, time.monotonic())

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.2, self.timeout / 10))
            current = self.current
            if current is not None and time.monotonic() - current[1] > self.timeout:
                stop(self.runtime.rank, self.log, current[0], f"no progress for {self.timeout:g} s", 124)


def stop(rank: int, log: RankLog, op, message: str, code: int) -> None:
    """Record why this rank stops, say it in one line, and leave at once (no hanging collective)."""
    with contextlib.suppress(OSError, ValueError):
        log.end("error", op=str(op), message=message)
    print(f"pipesim: rank {rank} stopped on {op}: {message}", file=sys.stderr, flush=True)
    os._exit(code)


def fault_hook(rank: int):
    """The PIPESIM_FAULT test hook for this rank, or None."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    fault_rank, fault_op, mode = spec.split(":")
    if int(fault_rank) != rank:
        return None

    def hook(index: int, op) -> None:
        if str(op) == fault_op:
            if mode == "exit":
                os._exit(3)
            while True:
                time.sleep(3600)

    return hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="executor.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="the run folder holding config.json")
    parser.add_argument("--resume-from", default=None, help="a checkpoint folder to start from")
    args = parser.parse_args(argv)
    folder = RunFolder(args.run_dir)
    config = folder.read_config()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(config.threads)
    log = RankLog(folder.rank_log(rank), rank)
    cuda = config.device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=config.timeout))
    control = dist.new_group(backend="gloo") if cuda else None
    if cuda:  # create the NCCL communicator with every rank present before any batched p2p
        dist.all_reduce(torch.zeros(1, device="cuda"))
    assembly = Assembly(config)
    clock = Clock()
    runtime = assembly.runtime(rank, DistTransport(), recorder=log, clock=clock.now)
    watchdog = Watchdog(runtime, log, config.timeout)
    fault = fault_hook(rank)

    def before_op(index: int, op) -> None:
        watchdog.started(index, op)
        if fault is not None:
            fault(index, op)

    runtime.before_op = before_op
    from executor.checkpoint import attach

    sync_clock(clock, rank, world, control)  # after the set-up: step 0 is timed from here
    clock.zero_ns -= int(float(os.environ.get("PIPESIM_TIME_SHIFT", "0")) * 1e9)  # a resumed run goes on
    if cuda:
        runtime.timer = CudaTimer(clock)
    attach(runtime, assembly, folder, args.resume_from)
    try:
        runtime.run()
        runtime.finish()
        watchdog.started(-1, "the final sends")
        runtime.mailman.finish(config.timeout)
        dist.barrier(group=control)
    except Exception as error:  # a peer died or a receive timed out: say where, then leave
        op = runtime.plan.ops[runtime.index] if not runtime.done else "the end of its program"
        stop(rank, log, op, _one_line(error), 1)
    log.end("ok")
    dist.destroy_process_group()
    return 0


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the interpreter's slow teardown of torch: everything is written and closed

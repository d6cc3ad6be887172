"""Single-process mode: every rank of a schedule interleaved in this one process, local hand-offs.

    from executor.run.local import run_local
    runtimes = run_local(Assembly(config))           # returns when every rank has finished

`pipesim run --single-process` calls `run_in_process`: the same loop, each rank logging to its rank log
as a distributed rank does, checkpoints attached, and a stop request honoured between two actions.

Deterministic round robin: rank 0 runs until its next op would wait for a message, then rank 1, ...,
then rank 0 again. Each rank does exactly the computations it does under torchrun, in the same order,
so with the same thread count the losses are bit-identical to the distributed run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from executor.interpreter.comm import LocalPostOffice, LocalTransport
from executor.interpreter.hooks import Hooks
from executor.interpreter.runtime import Runtime
from executor.run.assemble import Assembly
from executor.run.checkpoint_files import checkpoint_step
from executor.run.runfolder import RankLog, RunFolder, new_segment, one_line, op_text
from executor.run.worker import Clock, CudaTimer


class Deadlock(RuntimeError):
    """No rank can make progress: the program waits for a message nobody will send."""


class Stopped(Exception):
    """A stop was requested (a signal): raised before the next action; every rank log says so."""


def build_local(
    assembly: Assembly,
    hooks_for: Callable[[int], Hooks] | None = None,
    *,
    checkpoints: Path | None = None,
    resume_from: Path | None = None,
) -> list[Runtime]:
    """One Runtime per rank, all sharing one in-process post office (see Assembly.runtime for the
    checkpoint folders)."""
    office = LocalPostOffice(assembly.schedule.ranks)
    return [
        _build(assembly, rank, office, hooks_for, checkpoints, resume_from)
        for rank in range(assembly.schedule.ranks)
    ]


def _build(
    assembly: Assembly, rank: int, office: LocalPostOffice, hooks_for, checkpoints, resume_from
) -> Runtime:
    hooks = hooks_for(rank) if hooks_for is not None else None
    transport = LocalTransport(rank, office)
    return assembly.runtime(rank, transport, hooks=hooks, checkpoints=checkpoints, resume_from=resume_from)


def round_robin(runtimes: list[Runtime], poll: Callable[[], None] | None = None) -> None:
    """Run every rank to its end; raise Deadlock naming each rank's waiting op if all are stuck."""
    while not all(runtime.done for runtime in runtimes):
        progressed = False
        for runtime in runtimes:
            while runtime.step_once():
                progressed = True
        if poll is not None:
            poll()
        if not progressed:
            waiting = ", ".join(f"rank {r.rank} at {r.plan.ops[r.index]}" for r in runtimes if not r.done)
            raise Deadlock(f"no rank can proceed: {waiting}")


def run_local(
    assembly: Assembly,
    hooks_for: Callable[[int], Hooks] | None = None,
    poll: Callable[[], None] | None = None,
    configure: Callable[[list[Runtime]], None] | None = None,
) -> list[Runtime]:
    """Build all ranks (each with `hooks_for(rank)`), run them round robin, return the finished runtimes
    (for their losses). `configure` sees the runtimes before the first op runs (tests: a handler or the
    plan swapped, the runtimes collected)."""
    torch.set_num_threads(assembly.config.threads)
    runtimes = build_local(assembly, hooks_for)
    if configure is not None:
        configure(runtimes)
    round_robin(runtimes, poll)
    for runtime in runtimes:
        runtime.finish()
    return runtimes


def run_in_process(
    assembly: Assembly,
    folder: RunFolder,
    checkpoint: Path | None,
    *,
    time_shift: float,
    poll: Callable[[], None],
    stop_requested: Callable[[], bool],
) -> str | None:
    """Every rank in this process, logged into the run folder; None when all finished, else what failed
    (one line). Raises Stopped when `stop_requested()` turns true."""
    config = assembly.config
    torch.set_num_threads(config.threads)
    resume = checkpoint_step(checkpoint) if checkpoint is not None else None
    segment = new_segment()
    logs = [RankLog(folder.rank_log(r), r, resume=resume, segment=segment) for r in range(config.stages)]
    clock, current = Clock(), [0]  # the rank whose op runs now
    timer = CudaTimer(clock) if config.device == "cuda" else None  # one stream: the ranks' ops in turn

    def hooks_for(rank: int) -> Hooks:
        def before_op(index: int, op) -> None:
            current[0] = rank
            if stop_requested():
                raise Stopped()

        return Hooks(recorder=logs[rank], clock=clock.now, timer=timer, before_op=before_op)

    office, runtimes = LocalPostOffice(config.stages), []
    phase = "building the stages and optimizers"
    try:
        for rank in range(config.stages):
            if checkpoint is not None:
                phase = f"rank {rank} restoring checkpoint {checkpoint.name}"
            runtimes.append(_build(assembly, rank, office, hooks_for, folder.checkpoints, checkpoint))
    except Exception as error:
        for log in logs:
            log.end("error", op="set-up", message=f"{phase}: {one_line(error)}")
        return f"set-up failed ({phase}): {one_line(error)}"
    clock.zero_ns = time.perf_counter_ns() - int(time_shift * 1e9)  # step 0 is timed from here on
    return _interleave(runtimes, logs, poll, current)


def _interleave(runtimes: list[Runtime], logs: list[RankLog], poll, current: list[int]) -> str | None:
    try:
        round_robin(runtimes, poll)
    except Stopped:
        _end(runtimes, logs, "stopped", "stopped by a signal")
        raise
    except Deadlock as error:
        _end(runtimes, logs, "error", str(error))
        return str(error)
    except Exception as error:  # the rank that raised, the op it was on, and the error itself
        failed = runtimes[current[0]]
        on = op_text(failed.plan.ops[failed.index])
        logs[failed.rank].end("error", op=on, message=one_line(error))
        _end(runtimes, logs, "stopped", f"rank {failed.rank} failed")
        return f"rank {failed.rank} stopped on {on} ({one_line(error)})"
    for runtime, log in zip(runtimes, logs, strict=True):
        runtime.finish()
        log.end("ok")
    return None


def _end(runtimes: list[Runtime], logs: list[RankLog], status: str, message: str) -> None:
    """End the logs still open, each with the op its rank was on."""
    for runtime, log in zip(runtimes, logs, strict=True):
        on = op_text(runtime.plan.ops[runtime.index]) if not runtime.done else "the end of its program"
        log.end(status, op=on, message=message)

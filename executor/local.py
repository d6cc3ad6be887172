"""Single-process mode: every rank of a schedule interleaved in this one process, local hand-offs.

    from executor.local import run_local
    runtimes = run_local(Assembly(config))           # returns when every rank has finished

Deterministic round robin: rank 0 runs until its next op would wait for a message, then rank 1, ...,
then rank 0 again. Each rank does exactly the computations it does under torchrun, in the same order,
so with the same thread count the losses are bit-identical to the distributed run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from executor.assemble import Assembly
from executor.comm import LocalPostOffice, LocalTransport
from executor.runtime import Runtime


class Deadlock(RuntimeError):
    """No rank can make progress: the program waits for a message nobody will send."""


def build_local(assembly: Assembly, recorder_for: Callable[[int], object] | None = None) -> list[Runtime]:
    """One Runtime per rank, all sharing one in-process post office."""
    office = LocalPostOffice(assembly.schedule.ranks)
    return [
        assembly.runtime(rank, LocalTransport(rank, office), recorder_for(rank) if recorder_for else None)
        for rank in range(assembly.schedule.ranks)
    ]


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
    recorder_for: Callable[[int], object] | None = None,
    poll: Callable[[], None] | None = None,
    configure: Callable[[list[Runtime]], None] | None = None,
) -> list[Runtime]:
    """Build all ranks, run them round robin, return the finished runtimes (for their losses)."""
    torch.set_num_threads(assembly.config.threads)
    runtimes = build_local(assembly, recorder_for)
    if configure is not None:
        configure(runtimes)
    round_robin(runtimes, poll)
    for runtime in runtimes:
        runtime.finish()
    return runtimes

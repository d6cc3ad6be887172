"""Which CPUs the ranks of a CPU run use: a set of their own for each rank (pinned), or whatever the OS
gives them.

    from executor.run.cpus import pin_rank, rank_cpus, crowding
    rank_cpus(config, local_rank=1, local_ranks=2, available=[0, 1, 2, 3])   # (1,): config.threads == 1
    pin_rank(config)                  # in a rank, before torch starts its threads: the set it now runs on

A pipeline rank is a device of its own in the simulator's model. On a CPU machine the ranks' compute
threads and gloo's I/O threads otherwise share every CPU, and where the OS puts them changes with the
schedule's rhythm: measured here (two CPUs, P = 2, m = 8, eight alternating pairs of runs), unpinned 1F1B
ran 6% slower than pinned, and a 1F1B calibration predicted unpinned GPipe 8.5% too slow (median) against
2.3% pinned. So `pipesim run` pins by default, when every rank on the machine gets `threads` CPUs of its
own; `--no-pin` leaves the placement to the OS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from executor.run.runconfig import RunConfig


def available_cpus() -> list[int]:
    """The CPUs this process may run on, in order (its affinity, else all of the machine's)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    return len(available_cpus())


def rank_cpus(
    config: RunConfig, *, local_rank: int, local_ranks: int, available: Sequence[int]
) -> tuple[int, ...] | None:
    """The CPUs of the `local_rank`-th of this machine's `local_ranks` ranks: `config.threads` of
    `available` in a row; None when the run is not pinned (--no-pin, a GPU or single-process run, or
    more threads wanted than there are CPUs)."""
    threads = config.threads
    if not config.pin or config.device != "cpu" or config.single_process:
        return None
    if local_ranks * threads > len(available) or not 0 <= local_rank < local_ranks:
        return None
    return tuple(available[local_rank * threads : (local_rank + 1) * threads])


def placement(config: RunConfig) -> list[tuple[int, ...]] | None:
    """Each of a one-machine run's ranks' CPUs, as the ranks started from this process pin themselves
    (they inherit its CPUs); None when they are not pinned."""
    available = available_cpus()
    placed = [
        rank_cpus(config, local_rank=rank, local_ranks=config.stages, available=available)
        for rank in range(config.stages)
    ]
    return None if any(cpus is None for cpus in placed) else placed


def pin_rank(config: RunConfig) -> tuple[int, ...] | None:
    """Pin this rank (torchrun's LOCAL_RANK of LOCAL_WORLD_SIZE) to its CPUs; threads started later (torch's
    intra-op pool, gloo's I/O threads) inherit them. The CPUs, or None when it stays unpinned."""
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", str(config.stages)))
    cpus = rank_cpus(config, local_rank=local_rank, local_ranks=local_ranks, available=available_cpus())
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return None
    os.sched_setaffinity(0, cpus)
    return cpus


def crowding(config: RunConfig) -> str | None:
    """A warning when a CPU run's ranks, all on this machine, want more CPUs than it has: they take
    turns, and every measured time includes the wait for a CPU, which the simulator does not model."""
    if config.device != "cpu" or config.single_process:
        return None
    cpus, wanted = usable_cpus(), config.stages * config.threads
    if wanted <= cpus:
        return None
    return (
        f"{config.stages} ranks x {config.threads} thread(s) want {wanted} CPUs and this machine has {cpus}: "
        "the ranks take turns (unpinned), so the trace's times include waiting for a CPU (a calibration "
        "folds that in; a prediction for another P cannot know it)"
    )

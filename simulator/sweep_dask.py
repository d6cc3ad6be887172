"""Run a sweep's batches on a Dask cluster: the optional backend for sweeps too big for one machine.

    pip install 'pipesim[dask]'
    pipesim sweep --schedules 1f1b,2bw -p 8,16 -m 32,64 --out s.csv --backend dask                # local
    pipesim sweep ... --backend dask --scheduler tcp://10.0.0.5:8786     # an existing Dask cluster

Without --scheduler, a local cluster of `jobs` single-threaded worker processes runs the batches (what the
process pool does, through Dask's scheduler); with one, the batches go to that cluster's workers, which
need pipesim installed. Rows come back in grid order whatever the completion order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schedules.errors import UserError


def run_on_dask(
    points: list, *, jobs: int, progress: Callable[[int], None] | None, scheduler: str | None
) -> list[dict[str, Any]]:
    """Rows of every point, computed in batches by Dask workers."""
    from simulator.sweep import batches, run_points

    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise UserError("--backend dask needs Dask: pip install 'pipesim[dask]'") from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=max(1, jobs), threads_per_worker=1, processes=True, dashboard_address=None
        )
    try:
        with Client(cluster if cluster is not None else scheduler, timeout="30s") as client:
            parts = batches(points, jobs)
            futures = client.map(run_points, parts, pure=False)
            sizes = {future.key: len(part) for future, part in zip(futures, parts, strict=True)}
            for done in as_completed(futures):
                if progress:
                    progress(sizes[done.key])
            return [row for rows in client.gather(futures) for row in rows]
    except OSError as error:
        raise UserError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({error})") from None
    finally:
        if cluster is not None:
            cluster.close()

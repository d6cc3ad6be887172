"""The communication model: how long a transfer holds its link, which link it takes, and the ring
all-reduce of data-parallel replicas.

    transfer_time(nbytes=2**20, latency=5e-6, bandwidth=25e9)      # seconds on the link
    ring_allreduce_time(nbytes=2**30, replicas=4, latency=10e-6, bandwidth=50e9)

Note: links are directed (full duplex) and carry one transfer at a time, first come first served:

    rank 0 --link 0*P+1--> rank 1        SEND_F 0->1 and SEND_B 1->0 never wait for each other;
    rank 0 <--link 1*P+0-- rank 1        two SEND_F 0->1 posted together go one after the other.

The engine (simulator/engine.py) keeps, per link, when its last transfer ends; simulator/reference.py
models the same link as a simpy.Resource(capacity=1), and the tests check they agree.
"""

from __future__ import annotations


def link_index(source_rank: int, target_rank: int, ranks: int) -> int:
    """The directed link from one rank to another, numbered source * P + target."""
    return source_rank * ranks + target_rank


def transfer_time(nbytes: int, latency: float, bandwidth: float) -> float:
    """Seconds one point-to-point transfer holds its link: latency + bytes / bandwidth."""
    return latency + nbytes / bandwidth


def ring_allreduce_time(nbytes: int, replicas: int, latency: float, bandwidth: float) -> float:
    """Ring all-reduce of nbytes over `replicas` devices: 2(d-1) steps, each moving nbytes/d,
    so 2(d-1)/d x bytes / bandwidth + 2(d-1) x latency; 0 for a single replica."""
    if replicas <= 1:
        return 0.0
    steps = 2 * (replicas - 1)
    return steps / replicas * nbytes / bandwidth + steps * latency

"""Memory per rank: a hand-worked timeline, versions held, optimizer state and stash rules.

.venv/bin/pytest tests/simulator/test_memory.py -q
"""

from __future__ import annotations

import importlib.util

import pytest

from schedules import SCHEDULES, analyze, build
from simulator import CostModel, StageCost, simulate
from simulator.memory import version_lifetimes

WEIGHTS, STASH, ACTIVATION = 1000, 100, 10


def memory_by_action(schedule, simulation, rank: int) -> list[tuple[str, int]]:
    return [
        (str(a).split("@")[0], m)
        for a, m in zip(schedule.actions[rank], simulation.memory[rank], strict=True)
    ]


def test_gpipe_two_ranks_by_hand() -> None:
    # Weights 1000 + AdamW state 2000 = 3000 held throughout. Transfers take no time.
    # rank 0: F0 stashes 100 (3100); SEND_F0 posts a 10-byte buffer (3110), gone by F1 (3200);
    #   RECV_B0 buffers 10 (3210); B0 allocates the gradient 1000, frees the stash and the buffer (4100);
    #   RECV_B1 4110; B1 4000; OPT applies and frees the gradient, writing version 1 in place (3000).
    # rank 1: RECV_F0 3010; F0 turns the received input into its stash (3100); ...; B0 4100;
    #   SEND_B0 4110; B1 4000; SEND_B1 4010; OPT 3000.
    schedule = build("gpipe", 2, 2)
    costs = CostModel.uniform(weight_bytes=WEIGHTS, stash_bytes=STASH, activation_bytes=ACTIVATION)
    simulation = simulate(schedule, costs)
    assert memory_by_action(schedule, simulation, 0) == [
        ("0F0", 3100),
        ("0SEND_F0", 3110),
        ("0F1", 3200),
        ("0SEND_F1", 3210),
        ("0RECV_B0", 3210),
        ("0B0", 4100),
        ("0RECV_B1", 4110),
        ("0B1", 4000),
        ("0OPT", 3000),
    ]
    assert memory_by_action(schedule, simulation, 1) == [
        ("1RECV_F0", 3010),
        ("1F0", 3100),
        ("1RECV_F1", 3110),
        ("1F1", 3200),
        ("1B0", 4100),
        ("1SEND_B0", 4110),
        ("1B1", 4000),
        ("1SEND_B1", 4010),
        ("1OPT", 3000),
    ]
    assert simulation.metrics().peak_memory == [4110, 4110]


def test_a_send_buffer_is_held_until_its_transfer_ends() -> None:
    # 0.5 s transfers: SEND_F0 (posted at 1) is still in flight when F1 ends at 2? No: it ended at 1.5.
    # With 1.5 s transfers it is: F1's memory then counts both the buffer (10) and two stashes (200).
    schedule = build("gpipe", 2, 2)
    costs = CostModel.uniform(stash_bytes=STASH, activation_bytes=ACTIVATION, latency=1.5, optimizer="none")
    held = dict(memory_by_action(schedule, simulate(schedule, costs), 0))
    assert held["0F1"] == 2 * STASH + ACTIVATION
    quick = CostModel.uniform(stash_bytes=STASH, activation_bytes=ACTIVATION, latency=0.5, optimizer="none")
    assert dict(memory_by_action(schedule, simulate(schedule, quick), 0))["0F1"] == 2 * STASH


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_version_lifetimes_give_the_analytics_weight_versions(name: str) -> None:
    info = SCHEDULES[name]
    if importlib.util.find_spec(f"schedules.{info.module}") is None:
        pytest.skip(f"schedules/{info.module}.py does not exist yet")
    schedule = build(name, 4, 8, 3)
    held = [1] * schedule.num_stages
    for actions in schedule.actions:
        lifetimes = version_lifetimes(actions)
        for position in range(-1, len(actions)):
            count: dict[int, int] = {}
            for stage, _, begin, end in lifetimes:
                if begin <= position < end:
                    count[stage] = count.get(stage, 0) + 1
            for stage, number in count.items():
                held[stage] = max(held[stage], number)
    assert held == analyze(schedule).weight_versions


@pytest.mark.parametrize(
    ("name", "peaks"),
    [
        # one version + the gradient buffer
        ("gpipe", [2, 2, 2, 2]),
        # two buffers + the gradient accumulated over the step
        ("2bw", [3, 3, 3, 3]),
        # P-s stashed versions; the B that reads the oldest drops it as its gradient appears, so the
        # gradient fits in the freed slot - except on the last stage, whose B reads the current version
        ("pipedream", [4, 3, 2, 2]),
    ],
)
def test_weight_memory_follows_the_versions(name: str, peaks: list[int]) -> None:
    # Weights only: no optimizer state, stash or buffers; W bytes per version and per gradient.
    schedule = build(name, 4, 8, 3)
    metrics = simulate(schedule, CostModel.uniform(weight_bytes=WEIGHTS, optimizer="none")).metrics()
    assert metrics.peak_memory == [peak * WEIGHTS for peak in peaks]


@pytest.mark.parametrize(
    ("optimizer", "state"),
    [
        ("adamw", 2 * WEIGHTS),
        ("sgd", WEIGHTS),
        ("none", 0),
        ("muon", 600 + 2 * 400),
        ("basis-rotation", 2 * WEIGHTS + 5000),
    ],
)
def test_optimizer_state_by_optimizer(optimizer: str, state: int) -> None:
    # Muon: 1x its 600 bytes of matrices, AdamW's 2x for the other 400; rotation: 2x + 2(r^2 + c^2)
    # elements per matrix, here 5000 bytes. Held from the start: the first forward sees it.
    stage = StageCost(weight_bytes=WEIGHTS, matrix_bytes=600, rotation_bytes=5000)
    schedule = build("1f1b", 2, 2)
    simulation = simulate(schedule, CostModel(stages=(stage,), optimizer=optimizer))
    assert simulation.memory[1][1] == WEIGHTS + state  # 1F0, right after 1RECV_F0 (no bytes)


def test_interleaved_chunks_hold_a_share_of_the_stage() -> None:
    # Two chunks per rank, each 1/2 of a model stage's weights and stash: one version of each chunk.
    schedule = build("interleaved", 2, 4, chunks=2)
    costs = CostModel.uniform(weight_bytes=WEIGHTS, stash_bytes=STASH, optimizer="none")
    first = simulate(schedule, costs).memory[0][0]  # rank 0 after its first forward
    assert first == WEIGHTS + STASH // 2


def test_split_backward_keeps_the_weight_inputs_until_w() -> None:
    # ZB-H1 on 2 ranks: rank 1 runs F0 I0 F1 I1 W0 W1; I frees all of the stash but the 30 bytes its W
    # needs: 100, 30, then F1 I1 (60), W0 30, W1 0.
    schedule = build("zb-h1", 2, 2)
    costs = CostModel.uniform(stash_bytes=STASH, weight_input_bytes=30, optimizer="none")
    held = dict(memory_by_action(schedule, simulate(schedule, costs), 1))
    assert (held["1F0"], held["1I0"], held["1W0"], held["1W1"]) == (STASH, 30, 30, 0)

"""Generators: expected action orders written in the IR's text form, and every registered schedule validates.

.venv/bin/pytest tests/schedules/test_generators.py -q
"""

from __future__ import annotations

import importlib.util

import pytest

from schedules import SCHEDULES, build, validate
from schedules.ir import Schedule, ScheduleError, parse_action
from schedules.passes import lower


def texts(schedule: Schedule) -> list[str]:
    """Each rank's actions as one space-separated line."""
    return [" ".join(str(action) for action in actions) for actions in schedule.actions]


def generate(name: str, ranks: int, microbatches: int, steps: int = 1, chunks: int = 1) -> Schedule:
    return build(name, ranks, microbatches, steps, chunks, lowered=False)


EXPECTED = [
    # (name, P, m, steps, chunks, expected rank lines); why each case exists
    # GPipe: all forwards then all backwards, in microbatch order like PyTorch's ScheduleGPipe.
    ("gpipe", 2, 2, 1, 1, ["0F0 0F1 0B0 0B1", "1F0 1F1 1B0 1B1"]),
    # Steps repeat the flushing pattern; later steps carry @s<k>.
    ("gpipe", 2, 1, 2, 1, ["0F0 0B0 0F0@s1 0B0@s1", "1F0 1B0 1F0@s1 1B0@s1"]),
    # 1F1B: w_0 = 1 warm-up forward, then pairs, then cool-down (the brief's example).
    ("1f1b", 2, 3, 1, 1, ["0F0 0F1 0B0 0F2 0B1 0B2", "1F0 1B0 1F1 1B1 1F2 1B2"]),
    # 1F1B with m < P: the warm-up is capped at m, so stage 0 is all forwards then all backwards.
    ("1f1b", 3, 2, 1, 1, ["0F0 0F1 0B0 0B1", "1F0 1F1 1B0 1B1", "2F0 2B0 2F1 2B1"]),
    # Interleaved, P = 2, v = 2, m = P: rank 0's warm-up 2(P-1) + (v-1)P = 4 covers all its forwards.
    ("interleaved", 2, 2, 1, 2, ["0F0 0F1 2F0 2F1 2B0 2B1 0B0 0B1", "1F0 1F1 3F0 3B0 3F1 3B1 1B0 1B1"]),
    # Interleaved, P = 2, v = 2, m = 4: Megatron's mapping, P microbatches per chunk, chunks reversed in B.
    (
        "interleaved",
        2,
        4,
        1,
        2,
        [
            "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3",
            "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3",
        ],
    ),
    # Interleaved with v = 1 is plain 1F1B (Megatron's non-interleaved schedule).
    ("interleaved", 2, 2, 1, 1, ["0F0 0F1 0B0 0B1", "1F0 1B0 1F1 1B1"]),
    # ZB-H1, P = 2: stage 1 defers each W by one microbatch, stage 0 by none.
    ("zb-h1", 2, 3, 1, 1, ["0F0 0F1 0I0 0W0 0F2 0I1 0W1 0I2 0W2", "1F0 1I0 1F1 1I1 1W0 1F2 1I2 1W1 1W2"]),
    # ZB-H1, P = 3, m = P: the last stage runs all its Is before its first W (deferred by 2).
    (
        "zb-h1",
        3,
        3,
        1,
        1,
        [
            "0F0 0F1 0F2 0I0 0W0 0I1 0W1 0I2 0W2",
            "1F0 1F1 1I0 1F2 1I1 1W0 1I2 1W1 1W2",
            "2F0 2I0 2F1 2I1 2F2 2I2 2W0 2W1 2W2",
        ],
    ),
]


@pytest.mark.parametrize(("name", "ranks", "microbatches", "steps", "chunks", "expected"), EXPECTED)
def test_compute_only_order(
    name: str, ranks: int, microbatches: int, steps: int, chunks: int, expected: list[str]
) -> None:
    schedule = generate(name, ranks, microbatches, steps, chunks)
    assert texts(schedule) == expected
    assert schedule.chunks == chunks
    validate(schedule)


def test_lowering_adds_comms_optimizer_steps_and_versions() -> None:
    # 1F1B, P = 2, m = 2: a send right after the producer, a receive right before the consumer,
    # one OPT after the last backward, every read at version 0 and the update writing version 1.
    assert texts(build("1f1b", 2, 2)) == [
        "0F0@v0 0SEND_F0 0F1@v0 0SEND_F1 0RECV_B0 0B0@v0 0RECV_B1 0B1@v0 0OPT@v1",
        "1RECV_F0 1F0@v0 1B0@v0 1SEND_B0 1RECV_F1 1F1@v0 1B1@v0 1SEND_B1 1OPT@v1",
    ]


def test_lowering_twice_changes_nothing() -> None:
    once = build("zb-h1", 3, 4, steps=2)
    assert lower(once) == once


def test_interleaved_places_stages_round_robin() -> None:
    schedule = generate("interleaved", 4, 8, chunks=3)
    assert schedule.layout.placement == (0, 1, 2, 3) * 3
    for rank, actions in enumerate(schedule.actions):
        assert {action.stage for action in actions} == {rank, rank + 4, rank + 8}


def test_interleaved_warmup_matches_megatron() -> None:
    # Forwards before the first backward on rank d: min(2(P-d-1) + (v-1)P, m*v), plus the steady
    # phase's first forward when there is a steady phase.
    ranks, microbatches, chunks = 4, 8, 2
    schedule = generate("interleaved", ranks, microbatches, chunks=chunks)
    for rank, actions in enumerate(schedule.actions):
        first_backward = next(i for i, a in enumerate(actions) if a.kind.value == "B")
        warmup = min(2 * (ranks - rank - 1) + (chunks - 1) * ranks, microbatches * chunks)
        assert first_backward == warmup + 1


def test_interleaved_rejects_m_not_multiple_of_p() -> None:
    from schedules.interleaved import generate as interleaved

    with pytest.raises(ScheduleError, match="multiple"):
        interleaved(4, 6)


def test_zb_h1_defers_w_by_stage() -> None:
    # Between I(j) and W(j) stage s runs exactly s other Is (the deferral), whatever P and m.
    ranks, microbatches = 5, 9
    for stage, actions in enumerate(generate("zb-h1", ranks, microbatches).actions):
        order = [str(a) for a in actions]
        for j in range(microbatches):
            i_at, w_at = order.index(f"{stage}I{j}"), order.index(f"{stage}W{j}")
            between = [t for t in order[i_at + 1 : w_at] if "I" in t]
            assert len(between) == min(stage, microbatches - 1 - j)


GRID = [(2, 2), (2, 5), (3, 3), (4, 8), (4, 12), (5, 7), (8, 8), (8, 16)]


def _sizes(name: str) -> list[tuple[int, int, int]]:
    """(P, m, chunks) cases of GRID that the schedule accepts."""
    info = SCHEDULES[name]
    cases = []
    for ranks, microbatches in GRID:
        if info.needs_even_p and ranks % 2:
            continue
        if info.needs_m_multiple_of_p and microbatches % ranks:
            continue
        if (info.needs_m_ge_p and microbatches < ranks) or (info.needs_m_ge_2p and microbatches < 2 * ranks):
            continue
        for chunks in (1, 2, 3) if info.uses_chunks else (info.default_chunks,):
            cases.append((ranks, microbatches, chunks))
    return cases


def _available(name: str) -> bool:
    """Registered generators that another helper has not written yet are skipped (said in the report)."""
    return importlib.util.find_spec(f"schedules.{SCHEDULES[name].module}") is not None


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_registered_schedule_validates(name: str) -> None:
    if not _available(name):
        pytest.skip(f"schedules/{SCHEDULES[name].module}.py does not exist yet")
    for ranks, microbatches, chunks in _sizes(name):
        for steps in (1, 3):
            raw = build(name, ranks, microbatches, steps, chunks, lowered=False)
            validate(raw)
            validate(lower(raw))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_lowered_text_parses_back(name: str) -> None:
    if not _available(name):
        pytest.skip(f"schedules/{SCHEDULES[name].module}.py does not exist yet")
    ranks, microbatches, chunks = _sizes(name)[-1]
    schedule = build(name, ranks, microbatches, 2, chunks)
    for actions in schedule.actions:
        assert [parse_action(str(a)) for a in actions] == list(actions)

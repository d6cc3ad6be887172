"""The V schedules and the other schedules PyTorch ships, against the papers' closed forms (exact costs).

.venv/bin/pytest tests/schedules/test_v_closed_forms.py -q

Times per chunk (half a stage): t_F = 1/2, t_B = 1, t_I = t_W = 1/2 (Costs(f=1, b=2)), F&B the pair's time
max(F, B) + x min(F, B). Idle is per rank: the makespan of one step minus the rank's compute.

- ZB-V (Qi et al. 2024, section 6): with t_F = t_I = t_W, every rank idles (P-1)(F + B - 2W) = (P-1)/2,
  a sixth of 1F1B's 3(P-1), and holds at most 2P chunk-microbatches, P stage-microbatches: 1F1B's peak.
  That holds from m = 2P-1 on (PyTorch's order counts at least 2P-1 microbatches; fewer leave gaps).
- DualPipeV (deepseek-ai/DualPipe, README table, PP = 2P stages): the most idle rank idles
  (PP/2 - 1)(F&B + B - 3W) and every rank holds PP + 1 chunk-microbatches, P + 1/2 stage-microbatches;
  for every overlap x in [0, 1] (the table's F&B is whatever the pair takes).
- Looped BFS: GPipe over chunks, every rank holds all m v chunk-microbatches: m stage-microbatches.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schedules import Costs, analyze, build
from schedules.analytics import peak_activations
from schedules.costs import action_costs, overlapped

F, B, W = Fraction(1, 2), Fraction(1), Fraction(1, 2)  # per chunk
FEW = settings(max_examples=15, deadline=None)


def idle_per_rank(name: str, ranks: int, microbatches: int, costs: Costs) -> list[Fraction]:
    schedule = build(name, ranks, microbatches)
    result = analyze(schedule, costs)
    busy = [sum(durations) for durations in action_costs(costs, schedule)]  # no comms: all compute
    return [result.makespan - rank_busy for rank_busy in busy]


@st.composite
def zb_v_sizes(draw: st.DrawFn) -> tuple[int, int]:
    ranks = draw(st.integers(2, 12))
    return ranks, draw(st.integers(2 * ranks - 1, 4 * ranks))


@FEW
@given(zb_v_sizes())
@example((2, 3))  # smallest V, m = 2P-1
@example((12, 48))  # the largest case
def test_zb_v(size: tuple[int, int]) -> None:
    ranks, microbatches = size
    costs = Costs(f=Fraction(1), b=Fraction(2))
    assert idle_per_rank("zb-v", ranks, microbatches, costs) == [(ranks - 1) * (F + B - 2 * W)] * ranks
    result = analyze(build("zb-v", ranks, microbatches), costs)
    assert result.peak_activations_per_rank == [ranks] * ranks  # 1F1B's rank 0
    assert (result.weight_versions, result.delay) == ([1] * 2 * ranks, [0] * 2 * ranks)


def test_zb_v_below_2p_minus_1_microbatches_idles_more() -> None:
    """The control: the form is tied to m >= 2P-1, and the test above could fail."""
    costs = Costs(f=Fraction(1), b=Fraction(2))
    assert min(idle_per_rank("zb-v", 4, 5, costs)) > 3 * (F + B - 2 * W)


@st.composite
def dualpipev_sizes(draw: st.DrawFn) -> tuple[int, int, Fraction]:
    ranks = draw(st.integers(2, 12))
    overlap = draw(st.sampled_from([Fraction(0), Fraction(1, 4), Fraction(1, 2), Fraction(1)]))
    return ranks, draw(st.integers(2 * ranks, 4 * ranks)), overlap


@FEW
@given(dualpipev_sizes())
@example((2, 4, Fraction(1, 2)))  # smallest, m = 2P
@example((12, 48, Fraction(0)))  # the largest case, the shorter half hidden entirely
@example((5, 11, Fraction(1)))  # odd P, nothing hidden: the pairs are plain F then B
def test_dualpipev(size: tuple[int, int, Fraction]) -> None:
    ranks, microbatches, overlap = size
    costs = Costs(f=Fraction(1), b=Fraction(2), overlap_f_b=overlap)
    pair = overlapped(F, B, overlap)
    assert max(idle_per_rank("dualpipev", ranks, microbatches, costs)) == (ranks - 1) * (pair + B - 3 * W)
    result = analyze(build("dualpipev", ranks, microbatches), costs)
    assert result.peak_activations_per_rank == [ranks + Fraction(1, 2)] * ranks
    assert (result.weight_versions, result.delay) == ([1] * 2 * ranks, [0] * 2 * ranks)


def test_dualpipev_overlap_shortens_the_step() -> None:
    """Hiding more of each pair's shorter half can only shorten the step, and does here."""
    steps = [
        analyze(build("dualpipev", 4, 8), Costs(f=Fraction(1), b=Fraction(2), overlap_f_b=x)).step_time
        for x in (Fraction(0), Fraction(1, 2), Fraction(1))
    ]
    assert steps == sorted(steps) and steps[0] < steps[-1]


@pytest.mark.parametrize(("ranks", "microbatches", "chunks"), [(2, 3, 2), (4, 8, 2), (3, 5, 3)])
def test_looped_bfs_holds_every_microbatch(ranks: int, microbatches: int, chunks: int) -> None:
    per_stage, per_rank = peak_activations(build("looped-bfs", ranks, microbatches, chunks=chunks))
    assert per_rank == [microbatches] * ranks
    assert per_stage == [microbatches / chunks] * (ranks * chunks)


def test_interleaved_zb_with_one_chunk_is_zb_h1() -> None:
    for ranks, microbatches in ((2, 4), (4, 8), (5, 10)):
        ours = build("interleaved-zb", ranks, microbatches, chunks=1, lowered=False)
        assert ours.actions == build("zb-h1", ranks, microbatches, lowered=False).actions

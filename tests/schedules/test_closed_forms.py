"""The exact analytics equal the closed forms of docs/schedules.md (t_F = 1, B = 2, no communication).

.venv/bin/pytest tests/schedules/test_closed_forms.py -q

Property tests draw P in 2..16 and m in P..4P (for interleaved also v in 2..4 with m % P == 0). Costs are
Fractions, so every comparison is exact, including thirds for v = 3.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import example, given, settings
from hypothesis import strategies as st

from schedules import Costs, analyze, build

EXACT = Costs(f=Fraction(1), b=Fraction(2))  # full backward 2; split schedules run I = W = 1
FEW = settings(max_examples=30, deadline=None)


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int]:
    ranks = draw(st.integers(2, 16))
    return ranks, draw(st.integers(ranks, 4 * ranks))


@st.composite
def interleaved_sizes(draw: st.DrawFn) -> tuple[int, int, int]:
    ranks = draw(st.integers(2, 16))
    return ranks, ranks * draw(st.integers(1, 4)), draw(st.integers(2, 4))


def idle(result, ranks: int) -> Fraction:
    """Total idle time over all ranks in one step: ranks x step time minus the busy time."""
    return ranks * result.step_time * result.bubble_fraction


@FEW
@given(sizes())
@example((2, 2))  # smallest pipeline, m = P
@example((16, 64))  # largest P, m = 4P
def test_gpipe(size: tuple[int, int]) -> None:
    ranks, microbatches = size
    result = analyze(build("gpipe", ranks, microbatches), EXACT)
    assert result.makespan == 3 * (microbatches + ranks - 1)
    assert result.bubble_fraction == Fraction(ranks - 1, microbatches + ranks - 1)
    assert result.peak_activations == [microbatches] * ranks
    assert (result.weight_versions, result.delay) == ([1] * ranks, [0] * ranks)
    assert result.mismatches == [0] * ranks


@FEW
@given(sizes())
@example((2, 2))  # smallest pipeline, m = P
@example((16, 64))  # largest P, m = 4P
def test_1f1b(size: tuple[int, int]) -> None:
    ranks, microbatches = size
    result = analyze(build("1f1b", ranks, microbatches), EXACT)
    assert result.makespan == 3 * (microbatches + ranks - 1)
    assert result.bubble_fraction == Fraction(ranks - 1, microbatches + ranks - 1)
    assert result.peak_activations == [min(ranks - s, microbatches) for s in range(ranks)]
    assert (result.weight_versions, result.delay) == ([1] * ranks, [0] * ranks)


@FEW
@given(interleaved_sizes())
@example((2, 2, 2))  # m = P: the warm-up cap binds
@example((16, 64, 4))  # the largest case
def test_interleaved(size: tuple[int, int, int]) -> None:
    ranks, microbatches, chunks = size
    result = analyze(build("interleaved", ranks, microbatches, chunks=chunks), EXACT)
    # idle / ideal = (P-1) / (v m): the warm-up and cool-down bubble shrinks by v.
    assert result.bubble_ratio == Fraction(ranks - 1, chunks * microbatches)
    assert result.makespan == 3 * microbatches + Fraction(3 * (ranks - 1), chunks)
    # Device 0 holds P(1 + (P-1)/(Pv)) stage-microbatches: its warm-up 2(P-1) + (v-1)P chunk-microbatches
    # plus the first steady forward, over v. When m = P the warm-up is capped at m*v, i.e. m microbatches.
    device_0 = min(ranks * (1 + Fraction(ranks - 1, ranks * chunks)), microbatches)
    assert result.peak_activations_per_rank[0] == float(device_0)
    assert result.weight_versions == [1] * ranks * chunks and result.delay == [0] * ranks * chunks


@FEW
@given(sizes())
@example((2, 2))  # smallest pipeline, m = P
@example((16, 64))  # largest P, m = 4P
def test_zb_h1(size: tuple[int, int]) -> None:
    # What is compared (docs/schedules.md, row zb-h1): with F = I = W = 1 (our default split of a
    # full backward of 2) the idle time per rank is P-1, one third of 1F1B's 3(P-1) under the same
    # costs, so the makespan is 3m + P - 1. "Peak as 1F1B", per stage: a microbatch's activations are
    # in flight from its F to its I (backward for inputs); the Ws that stage s defers by s microbatches
    # keep only layer inputs, which the byte-level memory model of the simulator counts.
    ranks, microbatches = size
    zb = analyze(build("zb-h1", ranks, microbatches), EXACT)
    one_f_one_b = analyze(build("1f1b", ranks, microbatches), EXACT)
    assert idle(zb, ranks) == ranks * (ranks - 1)
    assert 3 * idle(zb, ranks) == idle(one_f_one_b, ranks)
    assert zb.makespan == 3 * microbatches + ranks - 1
    assert max(zb.peak_activations) == max(one_f_one_b.peak_activations) == ranks
    assert zb.peak_activations == one_f_one_b.peak_activations == [ranks - s for s in range(ranks)]
    assert (zb.weight_versions, zb.delay) == ([1] * ranks, [0] * ranks)


# Spot values of docs/schedules.md, exactly.


def test_spot_p4_m8() -> None:
    for name in ("gpipe", "1f1b"):
        result = analyze(build(name, 4, 8), EXACT)
        assert result.makespan == 33
        assert result.bubble_fraction == Fraction(3, 11)


def test_spot_p8_m32() -> None:
    for name in ("gpipe", "1f1b"):
        result = analyze(build(name, 8, 32), EXACT)
        assert result.makespan == 117
        assert round(float(result.bubble_fraction), 4) == 0.1795


def test_spot_interleaved_p4_m8_v2() -> None:
    result = analyze(build("interleaved", 4, 8, chunks=2))  # default float costs: halves are exact
    assert result.bubble_ratio == 3 / 16 == 0.1875
    assert result.peak_activations_per_rank[0] == 5.5


def test_spot_1f1b_peak_p8() -> None:
    assert analyze(build("1f1b", 8, 32)).peak_activations == [8, 7, 6, 5, 4, 3, 2, 1]

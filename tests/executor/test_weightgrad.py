"""Split backwards (I, then W) do the work of one B: W runs only the Linears' weight-gradient GEMMs.

Run: .venv/bin/pytest tests/executor/test_weightgrad.py

Counted with torch.utils.flop_counter.FlopCounterMode around every B, I and W handler of a local run:
flops(I) + flops(W) == flops(B) per stage (a W that redid the input-gradient chain made it about 2x), and
flops(W) == 2 x tokens x in x out summed over the stage's Linears. The same on frozen (snapshot-leaf)
forwards, whose gradients must still land in the live parameters' .grad exactly once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from executor.interpreter.hooks import Hooks
from executor.run.assemble import Assembly
from executor.run.local import run_local
from executor.training.data import load_corpus
from executor.training.model import Linear, build_stages
from schedules import Kind
from tests.executor.test_runtime import assert_close, config, reference_accumulation

SMALL = dict(microbatches=2, steps=2, layers=2, hidden=32)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def counted_run(cfg, corpus, *, frozen: bool = False):
    """Run locally; returns (Counter {(kind, stage): flops}, {step: {name: grad}}, the forwards seen).

    The forwards seen: per B/I/W, (ran on snapshot leaves, was recorded for a split backward)."""
    flops: Counter = Counter()
    grads: dict[int, dict[str, torch.Tensor]] = {}
    seen: list[tuple[bool, bool]] = []

    def configure(runtimes):
        for runtime in runtimes:
            if frozen:  # every forward on leaves aliasing the live weights: same values, the snapshot path
                forwards = {i for i, op in enumerate(runtime.plan.ops) if op.kind is Kind.F}
                runtime.plan = dataclasses.replace(runtime.plan, frozen_forward=frozenset(forwards))
            for kind in (Kind.B, Kind.I, Kind.W):
                runtime.handlers[kind] = counting(runtime, kind, runtime.handlers[kind], flops, seen)

    def on_update(state, op):
        grads.setdefault(op.step, {}).update(
            {name: p.grad.clone() for name, p in zip(state.store.names, state.params, strict=True)}
        )

    run_local(
        Assembly(cfg, corpus=corpus), hooks_for=lambda rank: Hooks(on_update=on_update), configure=configure
    )
    return flops, grads, seen


def counting(runtime, kind, handler, flops: Counter, seen: list[tuple[bool, bool]]):
    def counted(op):
        record = runtime.forwards[op.stage, op.step, op.microbatch]
        seen.append((record.leaves is not None, record.sink is not None))
        with FlopCounterMode(display=False) as counter:
            handler(op)
        flops[kind, op.stage] += counter.get_total_flops()

    return counted


def weight_gemm_flops(cfg, stage: int) -> int:
    """2 x tokens x in x out per Linear of `stage`, over every microbatch and step of the run."""
    module = build_stages(cfg.model_config, cfg.stages, seed=cfg.seed)[stage]
    tokens = cfg.microbatch_size * cfg.model_config.seq_len * cfg.microbatches * cfg.steps
    linears = [m for m in module.modules() if isinstance(m, Linear)]
    return sum(2 * tokens * m.in_features * m.out_features for m in linears)


@pytest.fixture(scope="module")
def one_f_one_b(corpus):
    return counted_run(config("1f1b", 2, **SMALL), corpus)


@pytest.mark.parametrize("frozen", [False, True], ids=["live", "frozen"])
def test_input_and_weight_backwards_add_up_to_one_full_backward(corpus, one_f_one_b, frozen):
    cfg = config("zb-h1", 2, **SMALL)
    flops, grads, seen = counted_run(cfg, corpus, frozen=frozen)
    full, _, _ = one_f_one_b
    assert set(seen) == {(frozen, True)}  # every I and W read the forward kind this case is about
    for stage in range(cfg.stages):
        split = flops[Kind.I, stage] + flops[Kind.W, stage]
        assert split == pytest.approx(full[Kind.B, stage], rel=0.01), stage
        assert flops[Kind.W, stage] == weight_gemm_flops(cfg, stage)
    _, ref_grads = reference_accumulation(cfg, corpus)
    for step in range(cfg.steps):
        assert_close(grads[step], ref_grads[step])


def test_full_backward_schedules_never_defer(corpus, one_f_one_b):
    """1F1B: no forward is recorded for a split backward, so its Linears run as plain nn.Linear."""
    cfg = config("1f1b", 2, **SMALL)
    flops, grads, seen = one_f_one_b
    assert set(seen) == {(False, False)} and {kind for kind, _ in flops} == {Kind.B}
    assert all(flops[Kind.B, stage] > weight_gemm_flops(cfg, stage) for stage in range(cfg.stages))
    _, ref_grads = reference_accumulation(cfg, corpus)
    assert_close(grads[cfg.steps - 1], ref_grads[cfg.steps - 1])

"""AMDP's gradient accounting, proven against plain PyTorch written here (docs/amdp.md gives the rule).

Run: .venv/bin/pytest tests/executor/test_amdp.py

The reference knows nothing of the executor: one module per depth, a weight snapshot per version, and
the rule as docs/amdp.md states it for AMDP (no stashing): the forward and the backward of a microbatch
read the versions the schedule's order gives them (its version tags); every weight gradient joins the
update that replaces the version its backward read, whatever step its data comes from; an update sums
what joined it, each microbatch's loss multiplied by 1/m. P = 4 and 8, m = P and 2P, three steps
(the first update, a middle one and the last, which sum m + N, m and m - N gradients on the last depth).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
import torch

from executor.run.assemble import Assembly
from executor.run.local import run_local
from executor.run.runconfig import RunConfig
from executor.training.data import load_corpus
from executor.training.model import build_stages, loss_fn
from executor.training.optim import OptimizerConfig
from schedules import Kind, Schedule
from schedules.semantics import update_sizes

STEPS = 3
OPTIMIZERS = {
    "sgd": (
        OptimizerConfig(name="sgd", lr=0.1, momentum=0.0),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.0),
    ),
    "adamw": (
        OptimizerConfig(name="adamw", lr=3e-3),
        lambda params: torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0),
    ),
}


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def amdp_config(ranks: int, microbatches: int, optimizer: OptimizerConfig) -> RunConfig:
    return RunConfig(
        schedule="amdp",
        stages=ranks,
        microbatches=microbatches,
        steps=STEPS,
        layers=ranks,
        hidden=16,
        seq_len=8,
        microbatch_size=2,
        val_every=0,
        optimizer=optimizer,
    )


@dataclasses.dataclass
class Forward:
    x: torch.Tensor
    out: torch.Tensor
    leaves: list[torch.Tensor]


class Reference:
    """AMDP evaluated in dependency order: a forward or backward runs once the weights it reads exist."""

    def __init__(self, cfg: RunConfig, schedule: Schedule, corpus, make_optimizer) -> None:
        self.cfg, self.corpus, self.depths = cfg, corpus, cfg.stages
        layout = schedule.layout
        self.read = {
            (a.kind, layout.depth(a.stage), a.step, a.microbatch): a.version
            for _, a in schedule.all_actions()
            if a.kind in (Kind.F, Kind.B)
        }
        self.expected = defaultdict(int)  # (depth, version) -> gradients the update of that version sums
        for (kind, depth, _, _), version in self.read.items():
            self.expected[depth, version] += kind is Kind.B
        self.pieces = build_stages(cfg.model_config, self.depths, seed=cfg.seed)
        self.optimizers = [make_optimizer(list(piece.parameters())) for piece in self.pieces]
        self.versions = [[self._snapshot(piece)] for piece in self.pieces]  # versions[d][v] = W_d(v)
        self.forwards: dict[tuple, Forward] = {}
        self.upstream: dict[tuple, torch.Tensor] = {}
        self.backed: set[tuple] = set()
        self.grads: dict[tuple[int, int], list[list[torch.Tensor]]] = defaultdict(list)
        self.losses: dict[tuple[int, int], float] = {}

    @staticmethod
    def _snapshot(piece: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in piece.parameters()]

    def _has(self, kind: Kind, depth: int, step: int, j: int) -> bool:
        return len(self.versions[depth]) > self.read[kind, depth, step, j]

    def run(self) -> None:
        microbatches = [(step, j) for step in range(self.cfg.steps) for j in range(self.cfg.microbatches)]
        while any(len(v) <= self.cfg.steps for v in self.versions):
            before = (len(self.forwards), len(self.backed), sum(map(len, self.versions)))
            for step, j in microbatches:
                for depth in range(self.depths):
                    ready = depth == 0 or (step, j, depth - 1) in self.forwards
                    if (step, j, depth) not in self.forwards and ready and self._has(Kind.F, depth, step, j):
                        self._forward(step, j, depth)
                for depth in reversed(range(self.depths)):
                    ready = depth == self.depths - 1 or (step, j, depth + 1) in self.backed
                    key = (step, j, depth)
                    if (
                        key in self.forwards
                        and key not in self.backed
                        and ready
                        and self._has(Kind.B, depth, step, j)
                    ):
                        self._backward(step, j, depth)
            for depth in range(self.depths):
                self._maybe_update(depth)
            assert (len(self.forwards), len(self.backed), sum(map(len, self.versions))) != before, "stuck"

    def _forward(self, step: int, j: int, depth: int) -> None:
        cfg = self.cfg
        inputs, targets = self.corpus.batch(
            "train",
            step=step,
            microbatch=j,
            microbatch_size=cfg.microbatch_size,
            seq_len=cfg.model_config.seq_len,
            seed=cfg.seed,
        )
        x = inputs if depth == 0 else self.forwards[step, j, depth - 1].out.detach().requires_grad_()
        version = self.read[Kind.F, depth, step, j]
        leaves = [w.clone().requires_grad_() for w in self.versions[depth][version]]
        names = [name for name, _ in self.pieces[depth].named_parameters()]
        out = torch.func.functional_call(self.pieces[depth], dict(zip(names, leaves, strict=True)), (x,))
        if depth == self.depths - 1:
            loss = loss_fn(out, targets)
            self.losses[step, j] = loss.item()
            out = loss * (1.0 / cfg.microbatches)
        self.forwards[step, j, depth] = Forward(x=x, out=out, leaves=leaves)

    def _backward(self, step: int, j: int, depth: int) -> None:
        record, version = self.forwards[step, j, depth], self.read[Kind.B, depth, step, j]
        # no stashing: the backward reads the weights current when it runs, through the forward's graph
        for leaf, weight in zip(record.leaves, self.versions[depth][version], strict=True):
            leaf.data.copy_(weight)
        wanted = ([record.x] if depth > 0 else []) + record.leaves
        grads = torch.autograd.grad(record.out, wanted, self.upstream.pop((step, j, depth), None))
        if depth > 0:
            self.upstream[step, j, depth - 1], grads = grads[0], grads[1:]
        self.grads[depth, version].append(list(grads))  # joins the update that replaces `version`
        self.backed.add((step, j, depth))

    def _maybe_update(self, depth: int) -> None:
        version = len(self.versions[depth]) - 1
        joined = self.grads[depth, version]
        if version >= self.cfg.steps or len(joined) < self.expected[depth, version]:
            return
        piece = self.pieces[depth]
        for index, param in enumerate(piece.parameters()):
            param.grad = torch.stack([grads[index] for grads in joined]).sum(0)
        self.optimizers[depth].step()
        self.optimizers[depth].zero_grad()
        self.versions[depth].append(self._snapshot(piece))


CASES = [(ranks, microbatches) for ranks in (4, 8) for microbatches in (ranks, 2 * ranks)]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize(("ranks", "microbatches"), CASES)
def test_executor_equals_the_decided_rule(corpus, ranks, microbatches, optimizer):
    config, make_reference_optimizer = OPTIMIZERS[optimizer]
    cfg = amdp_config(ranks, microbatches, config)
    assembly = Assembly(cfg, corpus=corpus)
    runtimes = run_local(assembly)
    losses = {(step, j): loss for r in runtimes for step, j, loss, _ in r.losses}
    stages = {stage: state for r in runtimes for stage, state in r.stages.items()}

    reference = Reference(cfg, assembly.schedule, corpus, make_reference_optimizer)
    reference.run()
    # the last depth's updates really differ in size (m + N, m, m - N): the rule is exercised
    last = update_sizes(assembly.schedule)[ranks - 1]
    assert list(last.values()) == [microbatches + ranks // 2, microbatches, microbatches - ranks // 2]

    # Tolerances: the sums add the same gradients in another order; AdamW turns that last-bit noise on
    # near-zero gradients into about 1e-6 in the weights. The other reading (a gradient joins the update
    # of its data's step) is off by more than 3e-3 in the losses and 2e-3 in the weights in every case.
    assert losses.keys() == reference.losses.keys()
    for key, loss in reference.losses.items():
        assert losses[key] == pytest.approx(loss, rel=1e-5, abs=1e-6), key
    for depth, piece in enumerate(reference.pieces):
        owner = stages[
            depth
        ]  # stage d, on rank d, owns depth d; its replicas are checked identical elsewhere
        for ours, theirs in zip(owner.params, piece.parameters(), strict=True):
            torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-5)


def test_the_executor_stops_when_its_gradient_buffer_and_the_rule_disagree(corpus):
    # Relabel rank 0's 7B1 of step 1 (it runs before update 0's block) with the other reading, "joins
    # the update of its data's step" (to v2): the buffer it sits in is handed over for the update to v1.
    cfg = amdp_config(4, 4, OPTIMIZERS["sgd"][0])
    assembly = Assembly(cfg, corpus=corpus)
    plan = assembly.plans[0]
    index = next(i for i, op in enumerate(plan.ops) if str(op) == "7B1@s1v0")
    assert plan.joins[index] == 1
    assembly.plans[0] = dataclasses.replace(plan, joins={**plan.joins, index: 2})
    with pytest.raises(RuntimeError, match=r"7RECV_W@v1>3 writes version 1 .* updates to 2"):
        run_local(assembly)

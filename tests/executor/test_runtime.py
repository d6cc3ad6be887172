"""The interpreter, proven numerically in the single-process mode against plain training written here.

Run: .venv/bin/pytest tests/executor/test_runtime.py

- flushing schedules (GPipe, 1F1B, ZB-H1, interleaved, looped BFS, interleaved ZB, ZB-V, DualPipeV, and a
  schedule read from PyTorch's CSV) == gradient accumulation over m microbatches;
- PipeDream == a loop applying W_s(j+1) = W_s(j) - lr U(grad at W_s(max(0, j - (P-1-s)))) per stage;
- 2BW == a loop applying W(k+1) = W(k) - lr U(grad at W(k-1)), and its step 0 equals 1F1B's;
- weight versions held: FLUSH 1, STASH P-s, DOUBLE_BUFFER 2; AMDP replicas end identical.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from executor.interpreter.hooks import Hooks
from executor.interpreter.program import NORM, Extra, build_plans, stuck_ranks
from executor.interpreter.versions import VersionStore
from executor.run.assemble import Assembly
from executor.run.local import run_local
from executor.run.runconfig import RunConfig
from executor.training.data import load_corpus
from executor.training.model import build_stages, loss_fn
from executor.training.optim import OptimizerConfig, make_optimizer
from schedules import SCHEDULES, Kind, build, parse_action

STEPS = 3
ADAMW = OptimizerConfig(name="adamw", lr=3e-3)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def config(schedule: str, stages: int, microbatches: int = 4, **overrides) -> RunConfig:
    base = dict(steps=STEPS, microbatch_size=2, seq_len=32, val_every=0, optimizer=ADAMW)
    base.update(overrides)
    return RunConfig(schedule=schedule, stages=stages, microbatches=microbatches, **base)


def run(cfg: RunConfig, corpus, capture_grads: bool = False):
    """Run locally; returns ({(step, microbatch): loss}, {step: {name: grad}}, runtimes)."""
    grads: dict[int, dict[str, torch.Tensor]] = {}

    def on_update(state, op):
        names = state.store.names
        grads.setdefault(op.step, {}).update(
            {name: p.grad.clone() for name, p in zip(names, state.params, strict=True)}
        )

    def hooks_for(rank: int) -> Hooks:
        return Hooks(on_update=on_update if capture_grads else None)

    runtimes = run_local(Assembly(cfg, corpus=corpus), hooks_for=hooks_for)
    losses = {(step, j): loss for r in runtimes for step, j, loss, _ in r.losses}
    return losses, grads, runtimes


def data(cfg: RunConfig, corpus, step: int, microbatch: int):
    return corpus.batch(
        "train",
        step=step,
        microbatch=microbatch,
        microbatch_size=cfg.microbatch_size,
        seq_len=cfg.model_config.seq_len,
        seed=cfg.seed,
    )


def reference_accumulation(cfg: RunConfig, corpus):
    """Plain single-process training: loss/m per microbatch, one update per step."""
    (model,) = build_stages(cfg.model_config, 1, seed=cfg.seed)
    optimizer = make_optimizer(cfg.optimizer, model)
    losses, grads = {}, {}
    for step in range(cfg.steps):
        for j in range(cfg.microbatches):
            inputs, targets = data(cfg, corpus, step, j)
            loss = loss_fn(model(inputs), targets)
            (loss / cfg.microbatches).backward()
            losses[step, j] = loss.item()
        grads[step] = {name: p.grad.clone() for name, p in model.named_parameters()}
        optimizer.step(step)
        optimizer.zero_grad()
    return losses, grads


def assert_close(ours: dict, theirs: dict, rtol: float = 1e-5) -> None:
    assert ours.keys() == theirs.keys()
    for key in theirs:
        torch.testing.assert_close(
            torch.as_tensor(ours[key]), torch.as_tensor(theirs[key]), rtol=rtol, atol=1e-7
        )


# Each case: a flushing schedule at P = 2 and 4 (interleaved: 2 ranks x 2 chunks = 4 pieces).
FLUSH_CASES = [
    ("gpipe", 2, 1),
    ("gpipe", 4, 1),
    ("1f1b", 2, 1),
    ("1f1b", 4, 1),
    ("zb-h1", 4, 1),  # I and W split: the same gradients
    ("interleaved", 2, 2),  # a rank holds two non-adjacent pieces
    ("looped-bfs", 2, 2),  # breadth first over the chunks
    ("interleaved-zb", 2, 2),  # looped chunks with I and W split
    ("zb-v", 2, 2),  # V placement: the last piece on rank 0, a local hand-off at the turn on rank 1
    ("dualpipev", 2, 2),  # V with OVERLAP_F_B pairs (run one after the other) and mixed B / I+W
]


@pytest.mark.parametrize(("schedule", "stages", "chunks"), FLUSH_CASES)
def test_flushing_schedules_equal_gradient_accumulation(corpus, schedule, stages, chunks):
    cfg = config(schedule, stages, chunks=chunks)
    losses, grads, _ = run(cfg, corpus, capture_grads=True)
    ref_losses, ref_grads = reference_accumulation(cfg, corpus)
    assert_close(losses, ref_losses)
    for step in range(cfg.steps):
        assert_close(grads[step], ref_grads[step])


def test_a_pytorch_schedule_csv_equals_gradient_accumulation(corpus):
    """PyTorch's own DualPipeV order, written as PyTorch writes its CSV, run as `pipesim run
    --schedule-file` runs it: the same losses and gradients as one process."""
    import csv
    import io

    from tests.schedules.test_pytorch_orders import torch_order

    buffer = io.StringIO()
    csv.writer(buffer).writerows(torch_order("ScheduleDualPipeV", 2, 2, 4))
    cfg = config("dualpipev.csv", 2, chunks=2, schedule_csv=buffer.getvalue())
    schedule = cfg.build_schedule()
    assert schedule.layout.placement == (0, 1, 1, 0) and Kind.OVERLAP_F_B in {
        a.kind for a in schedule.actions[0]
    }
    losses, grads, _ = run(cfg, corpus, capture_grads=True)
    ref_losses, ref_grads = reference_accumulation(cfg, corpus)
    assert_close(losses, ref_losses)
    for step in range(cfg.steps):
        assert_close(grads[step], ref_grads[step])


def reference_pipedream(cfg: RunConfig, corpus):
    """Stage s of P: microbatch j (global) runs at W_s(max(0, j - (P-1-s))); its update makes W_s(j+1)."""
    P = cfg.stages
    pieces = build_stages(cfg.model_config, P, seed=cfg.seed)
    optimizers = [
        make_optimizer(cfg.optimizer, m, stage=s, stages=P, delay=P - 1 - s) for s, m in enumerate(pieces)
    ]
    history = [{0: [p.detach().clone() for p in m.parameters()]} for m in pieces]
    losses = {}
    for j in range(cfg.steps * cfg.microbatches):
        step, microbatch = divmod(j, cfg.microbatches)
        inputs, targets = data(cfg, corpus, step, microbatch)
        hidden, leaves = inputs, []
        for s, module in enumerate(pieces):
            weights = [t.clone().requires_grad_() for t in history[s][max(0, j - (P - 1 - s))]]
            names = [name for name, _ in module.named_parameters()]
            hidden = torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (hidden,))
            leaves.append(weights)
        loss = loss_fn(hidden, targets)
        loss.backward()
        losses[step, microbatch] = loss.item()
        for s, module in enumerate(pieces):
            for param, leaf in zip(module.parameters(), leaves[s], strict=True):
                param.grad = leaf.grad
            optimizers[s].step(j)
            optimizers[s].zero_grad()
            history[s][j + 1] = [p.detach().clone() for p in module.parameters()]
    return losses


@pytest.mark.parametrize("stages", [2, 4])
def test_pipedream_equals_per_stage_delayed_rule(corpus, stages):
    cfg = config("pipedream", stages)
    losses, _, _ = run(cfg, corpus)
    assert_close(losses, reference_pipedream(cfg, corpus))


def reference_2bw(cfg: RunConfig, corpus, *, per_stage: bool = False):
    """W(k+1) = W(k) - lr U(grad f(W(k-1))), steps 0 and 1 both at W(0). per_stage: one optimizer per
    stage (so clipping uses each stage's own norm), else one over the whole model."""
    pieces = build_stages(cfg.model_config, cfg.stages if per_stage else 1, seed=cfg.seed)
    optimizers = [make_optimizer(cfg.optimizer, piece, delay=1) for piece in pieces]
    names = [[name for name, _ in piece.named_parameters()] for piece in pieces]
    older = [[p.detach().clone() for p in piece.parameters()] for piece in pieces]
    losses = {}
    for step in range(cfg.steps):
        leaves = [[t.clone().requires_grad_() for t in piece_older] for piece_older in older]
        for j in range(cfg.microbatches):
            hidden, targets = data(cfg, corpus, step, j)
            for piece, piece_names, piece_leaves in zip(pieces, names, leaves, strict=True):
                weights = dict(zip(piece_names, piece_leaves, strict=True))
                hidden = torch.func.functional_call(piece, weights, (hidden,))
            loss = loss_fn(hidden, targets)
            (loss / cfg.microbatches).backward()
            losses[step, j] = loss.item()
        older = [[p.detach().clone() for p in piece.parameters()] for piece in pieces]
        for piece, piece_leaves, optimizer in zip(pieces, leaves, optimizers, strict=True):
            for param, leaf in zip(piece.parameters(), piece_leaves, strict=True):
                param.grad = leaf.grad
            optimizer.step(step)
            optimizer.zero_grad()
    return losses


@pytest.mark.parametrize("stages", [2, 4])
def test_2bw_equals_one_step_delay_rule(corpus, stages):
    cfg = config("2bw", stages, microbatches=4, steps=4)
    losses, _, _ = run(cfg, corpus)
    assert_close(losses, reference_2bw(cfg, corpus))


def test_2bw_step0_equals_1f1b_and_step1_differs(corpus):
    two_bw, _, _ = run(config("2bw", 2), corpus)
    one_f_one_b, _, _ = run(config("1f1b", 2), corpus)
    m = 4
    assert [two_bw[0, j] for j in range(m)] == [one_f_one_b[0, j] for j in range(m)]
    assert [two_bw[1, j] for j in range(m)] != [one_f_one_b[1, j] for j in range(m)]


class VersionProbe:
    """A recorder that keeps, per stage, the most weight copies it ever held."""

    def __init__(self) -> None:
        self.runtime = None
        self.most: dict[int, int] = {}

    def event(self, index, op, start, end, moved, memory) -> None:
        for stage, state in self.runtime.stages.items():
            self.most[stage] = max(self.most.get(stage, 0), state.store.held())

    def loss(self, *args) -> None: ...
    def val(self, *args) -> None: ...
    def cut(self, *args) -> None: ...


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("1f1b", lambda s, P: 1), ("pipedream", lambda s, P: P - s), ("2bw", lambda s, P: 2)],
)
def test_weight_versions_held(corpus, schedule, expected):
    P = 4
    cfg = config(schedule, P, microbatches=4, steps=3, layers=4, hidden=32)
    probes = {rank: VersionProbe() for rank in range(P)}
    assembly = Assembly(cfg, corpus=corpus)

    def configure(runtimes):
        for runtime in runtimes:
            probes[runtime.rank].runtime = runtime

    run_local(assembly, hooks_for=lambda rank: Hooks(recorder=probes[rank]), configure=configure)
    most = {stage: n for probe in probes.values() for stage, n in probe.most.items()}
    assert most == {s: expected(s, P) for s in range(P)}


def test_amdp_replicas_end_identical_and_train(corpus):
    cfg = config("amdp", 4, microbatches=4, steps=4, layers=4, hidden=32)
    losses, _, runtimes = run(cfg, corpus)
    states = {stage: state for r in runtimes for stage, state in r.stages.items()}
    layout = runtimes[0].layout
    for stage in range(layout.stages_per_pipeline):
        for replica in layout.replicas(stage)[1:]:
            for a, b in zip(states[stage].params, states[replica].params, strict=True):
                assert torch.equal(a, b)
        assert states[stage].store.live == cfg.steps
    first = sum(losses[0, j] for j in range(4)) / 4
    last = sum(losses[cfg.steps - 1, j] for j in range(4)) / 4
    assert last < first


def test_frozen_forwards_are_the_ones_an_update_overtakes():
    """2BW, P = 2, stage 0: the first w_0 = 1 forward of step 1 runs before OPT(0) and backs after it."""
    schedule = build("2bw", 2, 4, 2)
    plan = build_plans(schedule)[0]
    frozen = [plan.ops[i] for i in sorted(plan.frozen_forward)]
    assert [(op.step, op.microbatch) for op in frozen] == [(1, 0)]
    kept = [plan.ops[i] for i in sorted(plan.keep_on_update)]
    assert [(op.kind, op.step) for op in kept] == [(Kind.OPT, 0)]


@pytest.mark.parametrize(("copy_on_write", "expected"), [(True, 2.0), (False, 5.0)])
def test_an_update_between_forward_and_backward(copy_on_write, expected):
    """STASH/DOUBLE_BUFFER (copy on write): the backward reads the version its forward read.
    CURRENT (AMDP, no stashing): the backward reads the weights current when it runs."""
    module = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(2.0)
    store = VersionStore(module, copy_on_write=copy_on_write)
    (weight,) = store.leaves(0, frozen=True)
    x = torch.ones(1, 1, requires_grad=True)
    out = torch.func.functional_call(module, {"weight": weight}, (x,))
    assert store.update(keep_old=True, apply=lambda: module.weight.data.add_(3.0)) == 1
    out.sum().backward()
    assert x.grad.item() == expected  # d(w x)/dx = w: the old 2 or the new 5
    assert module.weight.item() == 5.0 and store.old[0][0].item() == 2.0 and store.held() == 2


def test_programs_never_deadlock_and_a_bad_order_is_caught():
    for name in SCHEDULES:
        for ranks in (2, 4):
            schedule = build(name, ranks, 8, 3, SCHEDULES[name].default_chunks)
            plans = build_plans(schedule, val_steps=frozenset({0, 1, 2}), checkpoint_steps=frozenset({0, 1}))
            assert stuck_ranks(plans, schedule.layout) == [], (name, ranks)
    gpipe = build("gpipe", 2, 1)
    bad = gpipe.with_actions(
        [[parse_action(a) for a in ("0RECV_B0", "0F0@v0", "0SEND_F0", "0B0@v0", "0OPT@v1")], gpipe.actions[1]]
    )
    assert [(rank, str(op)) for rank, op in stuck_ranks(build_plans(bad), bad.layout)] == [
        (0, "0RECV_B0"),
        (1, "1RECV_F0"),
    ]


# ---- gradient clipping: global norm for flushing schedules, per stage for asynchronous ones ----------

CLIP = 0.05  # well below the tiny model's gradient norm (about 1): every step clips
CLIPPED = OptimizerConfig(name="sgd", lr=1.0, momentum=0.0, grad_clip=CLIP)
"""SGD: the update is the clipped gradient itself (Adam would mostly undo a per-stage scale)."""


def reference_clipped(cfg: RunConfig, corpus, *, per_stage: bool = False):
    """Gradient accumulation, then torch's clip_grad_norm_ over all parameters (per_stage: over each
    stage's own). Returns losses, gradients before clipping, and every norm clip_grad_norm_ saw."""
    pieces = build_stages(cfg.model_config, cfg.stages if per_stage else 1, seed=cfg.seed)
    unclipped = dataclasses.replace(cfg.optimizer, grad_clip=0.0)
    optimizers = [make_optimizer(unclipped, piece) for piece in pieces]
    losses, grads, norms = {}, {}, []
    for step in range(cfg.steps):
        for j in range(cfg.microbatches):
            hidden, targets = data(cfg, corpus, step, j)
            for piece in pieces:
                hidden = piece(hidden)
            loss = loss_fn(hidden, targets)
            (loss / cfg.microbatches).backward()
            losses[step, j] = loss.item()
        grads[step] = {name: p.grad.clone() for piece in pieces for name, p in piece.named_parameters()}
        for piece in pieces:
            norms.append(float(torch.nn.utils.clip_grad_norm_(piece.parameters(), cfg.optimizer.grad_clip)))
        for optimizer in optimizers:
            optimizer.step(step)
            optimizer.zero_grad()
    return losses, grads, norms


@pytest.mark.parametrize(
    ("schedule", "stages"),
    [("gpipe", 2), ("gpipe", 4), ("1f1b", 2), ("1f1b", 4), ("dualpipev", 2)],  # V: two OPTs wait per rank
)
def test_flushing_schedules_clip_by_the_global_norm(corpus, schedule, stages):
    cfg = config(schedule, stages, optimizer=CLIPPED, chunks=SCHEDULES[schedule].default_chunks)
    losses, grads, runtimes = run(cfg, corpus, capture_grads=True)
    ref_losses, ref_grads, norms = reference_clipped(cfg, corpus)
    assert min(norms) > 2 * CLIP  # clipping really triggers, every step
    assert all(NORM in {op.kind for op in r.plan.ops} for r in runtimes)
    assert_close(losses, ref_losses)
    for step in range(cfg.steps):
        assert_close(grads[step], ref_grads[step])


def test_per_stage_clipping_would_differ(corpus):
    """The same run with the NORM ops left out (each stage clips by its own norm, as before) matches a
    per-stage reference and misses the global one: the test above can fail."""
    cfg = config("1f1b", 2, optimizer=CLIPPED)
    assembly = Assembly(cfg, corpus=corpus)
    assembly.plans = build_plans(assembly.schedule)
    runtimes = run_local(assembly)
    losses = {(step, j): loss for r in runtimes for step, j, loss, _ in r.losses}
    assert_close(losses, reference_clipped(cfg, corpus, per_stage=True)[0])
    global_losses = reference_clipped(cfg, corpus)[0]
    later = [key for key in losses if key[0] > 0]
    assert all(abs(losses[k] - global_losses[k]) > 1e-4 * abs(global_losses[k]) for k in later)


@pytest.mark.parametrize("stages", [2, 4])
def test_2bw_still_clips_per_stage(corpus, stages):
    cfg = config("2bw", stages, steps=4, optimizer=CLIPPED)
    losses, _, runtimes = run(cfg, corpus)
    assert all(op.kind != NORM for r in runtimes for op in r.plan.ops)
    assert_close(losses, reference_2bw(cfg, corpus, per_stage=True))
    whole_model = reference_2bw(cfg, corpus)
    assert any(abs(losses[k] - whole_model[k]) > 1e-4 * abs(whole_model[k]) for k in losses)


def test_norm_ops_follow_every_backward_and_precede_every_update():
    """Flushing schedules with clipping: one NORM per step and rank, after the step's last backward and
    sends, before all its OPTs (interleaved: an earlier OPT waits); no deadlock; none without clipping."""
    for name in [name for name, info in SCHEDULES.items() if not info.asynchronous]:
        schedule = build(name, 4, 8, 2, SCHEDULES[name].default_chunks)
        assert all(op.kind != NORM for plan in build_plans(schedule) for op in plan.ops)
        plans = build_plans(schedule, grad_clip=1.0, checkpoint_steps=frozenset({0}))
        assert stuck_ranks(plans, schedule.layout) == [], name
        for plan in plans:
            norms = {op.step: i for i, op in enumerate(plan.ops) if op.kind == NORM}
            assert sorted(norms) == [0, 1] and all(norms[k] < plan.cuts[k] for k in norms)
            for index, op in enumerate(plan.ops):
                if op.kind in (Kind.B, Kind.W, Kind.SEND_B):
                    assert index < norms[op.step], (name, plan.rank, op)
                if op.kind is Kind.OPT:
                    assert norms[op.step] < index < plan.cuts[op.step], (name, plan.rank, op)
            assert sorted(map(str, (op for op in plan.ops if not isinstance(op, Extra)))) == sorted(
                map(str, schedule.actions[plan.rank])
            )

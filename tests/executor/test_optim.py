"""Optimizers and corrections: they train, they follow docs/optimizers.md, they resume bit-identically.

Run: .venv/bin/pytest tests/executor/test_optim.py
"""

from __future__ import annotations

import io
import math
from functools import partial

import pytest
import torch

from executor.errors import ExecutorConfigError
from executor.training.data import load_corpus
from executor.training.model import PRESETS, GPTConfig, build_stages, loss_fn
from executor.training.optim import (
    OPTIMIZERS,
    BasisRotation,
    OptimizerConfig,
    make_optimizer,
    pipemare_lr,
    scheduled_lr,
)
from executor.training.optim.basis_rotation import power_step

LEARNING_RATES = {"sgd": 0.2, "adamw": 1e-2, "nadamw": 1e-2, "muon": 1e-2, "basis-rotation": 3e-3}


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one thread is as fast as two and does not stall when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(max_bytes=500_000)


def _train(model, optimizer, corpus, steps, *, first=0, seq_len=64):
    losses = []
    for step in range(first, first + steps):
        inputs, targets = corpus.batch(
            "train", step=step, microbatch=0, microbatch_size=8, seq_len=seq_len, seed=0
        )
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step(step)
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def _val_loss(model, corpus):
    inputs, targets = corpus.batch("val", step=0, microbatch=0, microbatch_size=16, seq_len=64, seed=0)
    with torch.no_grad():
        return loss_fn(model(inputs), targets).item()


@pytest.mark.parametrize(
    "name, extra",
    [(name, {}) for name in OPTIMIZERS] + [("basis-rotation", {"rotation_sides": "one"})],
)
def test_every_optimizer_trains_the_tiny_model(corpus, name, extra):
    (model,) = build_stages(PRESETS["tiny"], 1, seed=0)
    optimizer = make_optimizer(OptimizerConfig(name=name, lr=LEARNING_RATES[name], **extra), model)
    before = _val_loss(model, corpus)
    _train(model, optimizer, corpus, 20)
    after = _val_loss(model, corpus)
    assert before > 5.0  # about ln 256 at initialisation
    assert after < before - 1.0, (before, after)


# --- basis rotation against a direct transcription of docs/optimizers.md ---------------------------------


def _spec_basis_rotation(weight, grads, *, lr, betas, eps, wd, every, sides):
    """docs/optimizers.md, plainly; sides: which of "left", "right" rotate (the other: identity)."""
    beta1, beta2 = betas
    r, c = weight.shape
    zeros, eye = partial(torch.zeros, dtype=weight.dtype), partial(torch.eye, dtype=weight.dtype)
    w, m, v = weight.clone(), zeros(r, c), zeros(r, c)
    L, R = zeros(r, r), zeros(c, c)
    QL, QR = eye(r), eye(c)
    for t, g in enumerate(grads, start=1):
        L = beta2 * L + (1 - beta2) * g @ g.T
        R = beta2 * R + (1 - beta2) * g.T @ g
        if (t - 1) % every == 0:
            for side in sides:
                X, Q = (L, QL) if side == "left" else (R, QR)
                if t == 1:
                    values, vectors = torch.linalg.eigh(X)
                    Q = vectors[:, torch.argsort(values, descending=True)]
                else:
                    order = torch.argsort(torch.diagonal(Q.T @ X @ Q), descending=True)
                    Q = Q[:, order]
                    v = v[order, :] if side == "left" else v[:, order]
                    Q = torch.linalg.qr(X @ Q).Q
                QL, QR = (Q, QR) if side == "left" else (QL, Q)
        m = beta1 * m + (1 - beta1) * g
        m_rot = QL.T @ m @ QR
        g_rot = QL.T @ g @ QR
        v = beta2 * v + (1 - beta2) * g_rot**2
        w = (
            w
            - lr * wd * w
            - lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * QL @ (m_rot / (v.sqrt() + eps)) @ QR.T
        )
    return w, m, v, QL, QR


def _run_basis_rotation(weight, grads, **settings):
    parameter = torch.nn.Parameter(weight.clone())
    optimizer = BasisRotation([parameter], **settings)
    for g in grads:
        parameter.grad = g.clone()
        optimizer.step()
    return parameter.detach(), optimizer.state[parameter]


@pytest.mark.parametrize(
    "shape, sides, expected_sides",
    [
        ((5, 5), "both", ("left", "right")),  # square: both factors full rank from the first gradient
        ((3, 7), "one", ("left",)),  # one-sided: the smaller side is the left one
        ((7, 3), "one", ("right",)),  # ... and here the right one
    ],
)
def test_basis_rotation_follows_the_spec_formulas(shape, sides, expected_sides):
    # float64: rotated both ways the first gradient is diagonal (its SVD), and in float32 the sign of each
    # ~1e-7 off-diagonal rounding residue would decide a full-size step (Adam's first step is sign-like).
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(shape, generator=generator, dtype=torch.float64)
    grads = [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(8)]  # T=3: t=1,4,7
    settings = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8, wd=0.1, every=3)
    w, m, v, QL, QR = _spec_basis_rotation(weight, grads, sides=expected_sides, **settings)
    settings["weight_decay"] = settings.pop("wd")
    got, state = _run_basis_rotation(weight, grads, sides=sides, **settings)
    assert state["step"] == 8
    assert {key for key in state if key.startswith("basis_")} == {f"basis_{side}" for side in expected_sides}
    close = dict(rtol=1e-7, atol=1e-7)  # the gap: rounding residue (1e-16) over eps (1e-8), times lr
    torch.testing.assert_close(got, w, **close)
    torch.testing.assert_close(state["m"], m, **close)
    torch.testing.assert_close(state["v"], v, **close)
    if "left" in expected_sides:
        torch.testing.assert_close(state["basis_left"], QL, **close)
    if "right" in expected_sides:
        torch.testing.assert_close(state["basis_right"], QR, **close)


def test_qr_refresh_sorts_then_converges_to_the_eigenbasis():
    generator = torch.Generator().manual_seed(2)
    root = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    factor = root @ root.T
    basis = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64)).Q
    new, order = power_step(factor, basis)
    estimates = torch.diagonal(basis.T @ factor @ basis)
    assert torch.equal(order, torch.argsort(estimates, descending=True))
    torch.testing.assert_close(new, torch.linalg.qr(factor @ basis[:, order]).Q)
    for _ in range(300):
        new, _ = power_step(factor, new)
    rotated = new.T @ factor @ new
    eigenvalues = torch.linalg.eigvalsh(factor).flip(0)
    torch.testing.assert_close(torch.diagonal(rotated), eigenvalues, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(rotated, torch.diag(eigenvalues), rtol=0, atol=1e-5 * eigenvalues[0].item())


def test_basis_rotation_state_bytes_are_moments_factors_and_bases():
    weight = torch.nn.Parameter(torch.zeros(5, 3))
    optimizer = make_optimizer(OptimizerConfig(name="basis-rotation"), [weight])
    weight.grad = torch.ones(5, 3)
    optimizer.step(0)
    assert optimizer.state_bytes() == 4 * (2 * 5 * 3 + 2 * (5 * 5 + 3 * 3))


# --- schedules and corrections --------------------------------------------------------------------------


def test_warmup_and_cosine_schedule():
    config = OptimizerConfig(lr=1.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [scheduled_lr(config, t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert scheduled_lr(config, 9) == pytest.approx(0.55)  # halfway down the cosine
    assert scheduled_lr(config, 14) == pytest.approx(0.1)
    assert scheduled_lr(config, 100) == pytest.approx(0.1)
    assert scheduled_lr(OptimizerConfig(lr=0.3), 1000) == 0.3


@pytest.mark.parametrize(
    "t, delay, expected",
    [
        (0, 4, 0.25),  # full scaling at the start: lr / tau
        (5, 4, 0.5),  # halfway through T_c = 10: lr / 4^0.5
        (10, 4, 1.0),  # faded out at T_c
        (30, 4, 1.0),
        (0, 1, 1.0),  # tau = 1 changes nothing
        (0, 0, 1.0),  # no delay: no correction
    ],
)
def test_pipemare_learning_rate(t, delay, expected):
    assert pipemare_lr(1.0, t, delay, horizon=10) == pytest.approx(expected)
    config = OptimizerConfig(name="sgd", lr=2.0, correction="pipemare", pipemare_steps=10)
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = make_optimizer(config, [weight], delay=delay)
    weight.grad = torch.ones(3)
    assert optimizer.step(t).lr == pytest.approx(2.0 * expected)
    assert optimizer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2.0 * expected)


def test_delay_correction_rule_on_a_delayed_quadratic():
    # f(w) = 0.5 w^T A w; each update uses the gradient at the weights of one step before.
    A = torch.diag(torch.tensor([1.0, 3.0, 0.5]))
    lr, lam = 0.1, 0.5
    config = OptimizerConfig(name="sgd", lr=lr, momentum=0.0, correction="delay", delay_lambda=lam)
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    optimizer = make_optimizer(config, [weight], delay=1)
    expected, previous_w, previous_u = weight.detach().clone(), weight.detach().clone(), None
    stale = weight.detach().clone()
    for t in range(12):
        weight.grad = A @ stale
        stale = weight.detach().clone()
        optimizer.step(t)
        # the rule, independently: u_t = -lr * grad(w_{t-1}); Delta_t = u_t + lam (u_t - u_{t-1})
        u = -lr * (A @ previous_w)
        delta = u if previous_u is None else u + lam * (u - previous_u)
        previous_w, previous_u = expected.clone(), u
        expected = expected + delta
        torch.testing.assert_close(weight.detach(), expected, rtol=1e-6, atol=1e-7)


def test_gradient_clipping_to_the_global_norm():
    weights = [torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2, 2))]
    optimizer = make_optimizer(OptimizerConfig(name="sgd", lr=1.0, momentum=0.0, grad_clip=1.0), weights)
    weights[0].grad, weights[1].grad = torch.full((4,), 3.0), torch.full((2, 2), 4.0)
    report = optimizer.step(0)
    assert report.grad_norm == pytest.approx(10.0)
    assert torch.cat([w.detach().flatten() for w in weights]).norm().item() == pytest.approx(1.0, rel=1e-5)
    weights[0].grad, weights[1].grad = torch.full((4,), 3.0), torch.full((2, 2), 4.0)
    assert optimizer.step(1, grad_norm=100.0).grad_norm == 100.0  # a norm summed over all stages
    assert weights[0].detach()[0].item() == pytest.approx(-0.3 - 0.03, rel=1e-5)


def test_nadamw_beta1_default_and_per_stage():
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    assert make_optimizer(OptimizerConfig(name="nadamw"), [weight]).optimizers[0].defaults["betas"][0] == 0.99
    config = OptimizerConfig(name="nadamw", betas=(0.9, 0.95), nesterov_per_stage=True)
    betas = [
        make_optimizer(config, [weight], stage=s, stages=4).optimizers[0].defaults["betas"][0]
        for s in range(4)
    ]
    assert betas == pytest.approx([0.9 + (3 - s) * 0.09 / 4 for s in range(4)])


def test_muon_and_basis_rotation_take_hidden_matrices_only():
    (model,) = build_stages(GPTConfig(seq_len=8, layers=1, hidden=16, heads=2), 1)
    for name, kind in (("muon", torch.optim.Muon), ("basis-rotation", BasisRotation)):
        matrices, rest = make_optimizer(OptimizerConfig(name=name), model).optimizers
        assert isinstance(matrices, kind) and isinstance(rest, torch.optim.AdamW)
        assert len(matrices.param_groups[0]["params"]) == 4  # qkv, proj, fc, out
        rest_params = [p for group in rest.param_groups for p in group["params"]]
        assert len(rest_params) == sum(1 for _ in model.parameters()) - 4


# --- resume ---------------------------------------------------------------------------------------------

RESUME_CASES = [
    dict(name="sgd", lr=0.1),
    dict(name="adamw", lr=1e-2, weight_decay=0.1, grad_clip=1.0, warmup_steps=2, total_steps=10),
    dict(name="nadamw", lr=1e-2, nesterov_per_stage=True),
    dict(name="muon", lr=1e-2),
    dict(name="basis-rotation", lr=3e-3, rotation_every=2),
    dict(name="basis-rotation", lr=3e-3, rotation_every=2, rotation_sides="one"),
    dict(name="adamw", lr=1e-2, correction="delay"),
    dict(name="sgd", lr=0.1, correction="pipemare", pipemare_steps=4),
]


@pytest.mark.parametrize("settings", RESUME_CASES, ids=lambda s: f"{s['name']}-{s.get('correction', '')}")
def test_state_dict_round_trip_resumes_bit_identically(corpus, settings):
    config, model_config = OptimizerConfig(**settings), GPTConfig(seq_len=16, layers=2, hidden=32, heads=2)

    def fresh():
        (model,) = build_stages(model_config, 1, seed=0)
        return model, make_optimizer(config, model, stage=1, stages=3, delay=1)

    model, optimizer = fresh()
    _train(model, optimizer, corpus, 3, seq_len=16)
    checkpoint = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint)
    straight = _train(model, optimizer, corpus, 3, first=3, seq_len=16)
    checkpoint.seek(0)
    saved = torch.load(checkpoint)
    resumed_model, resumed_optimizer = fresh()
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    assert _train(resumed_model, resumed_optimizer, corpus, 3, first=3, seq_len=16) == straight
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_into_another_optimizer_is_a_user_error():
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    saved = make_optimizer(OptimizerConfig(name="adamw"), [weight]).state_dict()
    with pytest.raises(ExecutorConfigError, match="resume"):
        make_optimizer(OptimizerConfig(name="sgd"), [weight]).load_state_dict(saved)


def test_state_bytes_of_adamw_and_the_delay_correction():
    weights = [torch.nn.Parameter(torch.zeros(10, 10)), torch.nn.Parameter(torch.zeros(10))]
    plain = make_optimizer(OptimizerConfig(name="adamw"), weights)
    corrected = make_optimizer(OptimizerConfig(name="adamw", correction="delay"), weights)
    for optimizer in (plain, corrected):
        for weight in weights:
            weight.grad = torch.ones_like(weight)
        optimizer.step(0)
    moments = 2 * 110 * 4
    assert moments <= plain.state_bytes() <= moments + 2 * 8  # plus one scalar step per tensor
    assert corrected.state_bytes() - plain.state_bytes() == 2 * 110 * 4  # u_{t-1} and the pre-step copy


@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(name="adam"), "--optimizer: unknown 'adam'; choose from sgd, adamw"),
        (dict(correction="magic"), "--correction: unknown 'magic'"),
        (dict(lr=0.0), "--lr must be in"),
        (dict(betas=(0.9, 1.0)), "--beta2 must be in"),
        (dict(warmup_steps=10, total_steps=5), "--total-steps 5 must exceed --warmup-steps 10"),
        (dict(rotation_sides="left"), "--rotation-sides: unknown 'left'"),
    ],
)
def test_bad_settings_are_one_line_user_errors(settings, words):
    with pytest.raises(ExecutorConfigError, match=words) as caught:
        OptimizerConfig(**settings)
    assert "\n" not in str(caught.value)

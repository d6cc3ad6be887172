"""Checkpoints at step boundaries, and resuming from one bit-identically (CPU, same thread count).

    runs/NAME/checkpoints/step-000010/rank0.pt     what rank 0 held at its cut after 10 steps
    runs/NAME/checkpoints/step-000010/rank0.json   its marker (size and SHA-256), written last

The files, their verification and pruning are executor.run.checkpoint_files; this module is what goes in
them and how a rank starts again from them.

Asynchronous schedules never drain, so there is no moment when the whole pipeline is empty. Each rank
saves at its own cut (right after its last update of the step, see executor.interpreter.program), and
what crosses the cut is statically known from the action lists:

    rank a  .. SEND(x) .. | cut_a | ..............        x sent before a's cut, received after b's:
    rank b  ........ | cut_b | .. RECV(x) ..              a saves x and sends it again on resume
    rank a  ........ | cut_a | .. SEND(y) ..              y sent after a's cut, received before b's:
    rank b  .. RECV(y) .. | cut_b | ........              a skips that send on resume

A checkpoint holds every weight version still read, the optimizer state and gradient buffers, the
received tensors not yet consumed, the inputs of the forwards whose backward is still to come (their
forwards are recomputed on resume: same weights, same inputs, same graph), the messages to send again,
and the losses measured so far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from executor.interpreter.comm import Mailman
from executor.interpreter.compute import Forward, run_forward, weights_for
from executor.interpreter.hooks import Hooks, Restore, Settings
from executor.interpreter.program import Message, MicrobatchKey, RankPlan
from executor.interpreter.runtime import Runtime
from executor.interpreter.stage import StageState
from executor.run.checkpoint_files import prune, read_rank_file, write_rank_file
from executor.training.model import loss_fn
from schedules.ir import Kind, Layout


def crossing(plans: list[RankPlan], rank_of, step: int) -> tuple[set[Message], set[Message]]:
    """(resend, skip) at the cut of `step`: messages sent before the sender's cut and received after the
    receiver's, and messages sent after the sender's cut but received before the receiver's."""
    resend, skip = set(), set()
    for plan in plans:
        cut = plan.cuts[step]
        for message, index in plan.send_index.items():
            receiver = plans[rank_of(message.dst)]
            received = receiver.recv_index[message] < receiver.cuts[step]
            if index < cut and not received:
                resend.add(message)
            elif index > cut and received:
                skip.add(message)
    return resend, skip


def resume_orders(plans: list[RankPlan], rank_of, step: int, resend: set[Message]):
    """Pair orders after a resume: the re-sent messages first, then the sends after each cut."""
    orders: dict[tuple[int, int], list[Message]] = {}
    for plan in plans:
        cut = plan.cuts[step]
        by_index = sorted((index, message) for message, index in plan.send_index.items())
        again = [m for i, m in by_index if m in resend]
        later = [m for i, m in by_index if i > cut]
        receiver_cut = {m: plans[rank_of(m.dst)].cuts[step] for m in later}
        later = [m for m in later if plans[rank_of(m.dst)].recv_index[m] > receiver_cut[m]]
        for message in again + later:
            orders.setdefault((plan.rank, rank_of(message.dst)), []).append(message)
    return orders


def with_saving(
    hooks: Hooks, plans: list[RankPlan], layout: Layout, rank: int, *, steps, keep: int, root: Path
):
    """`hooks` plus saving this rank's checkpoints under `root` (a run folder's checkpoints/) at the cuts
    of `steps`, rank 0 pruning all but the newest `keep`."""
    rank_of, steps = layout.placement.__getitem__, sorted(steps)
    mine = {step: {m for m in crossing(plans, rank_of, step)[0] if rank_of(m.src) == rank} for step in steps}

    def on_cut(runtime: Runtime, step: int) -> None:
        if step in mine:
            save(runtime, root, step, mine[step])
            later = set().union(*(mine[s] for s in steps if s > step))
            for message in mine[step] - later:
                runtime.kept.pop(message, None)
            if rank == 0:
                prune(root, len(plans), keep)

    keep_sent = frozenset().union(*mine.values()) if mine else frozenset()
    return dataclasses.replace(hooks, on_cut=on_cut, keep_sent=keep_sent)


def save(runtime: Runtime, root: Path, step: int, resend: set[Message]) -> None:
    """Write this rank's state at its cut of `step` (the .pt, then the marker that proves it whole).
    Keys are plain tuples: a checkpoint names no class of the executor's but its messages."""
    state = {
        "step": step,
        "index": runtime.index,
        "stages": {s: _stage_state(state) for s, state in runtime.stages.items()},
        "inputs": _detached(runtime.inputs),
        "grads": _detached(runtime.grads),
        "grad_out": _detached(runtime.grad_out),
        "forwards": {
            tuple(key): {"x": r.x.detach().clone(), "version": r.version, "grad": r.grad}
            for key, r in runtime.forwards.items()
        },
        "resend": {message: runtime.kept[message] for message in resend},
        "losses": list(runtime.losses),
        "vals": list(runtime.vals),
    }
    write_rank_file(root, step, runtime.rank, state, runtime.clock())


def _stage_state(state: StageState) -> dict:
    return {
        "store": state.store.state_dict(),
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in state.params],
        "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
    }


def _detached(tensors: dict) -> dict:
    return {tuple(key): tensor.detach().clone() for key, tensor in tensors.items()}


def load(
    path: Path,
    *,
    rank: int,
    plans: list[RankPlan],
    layout: Layout,
    stages: dict[int, StageState],
    mailman: Mailman,
    batch: Callable[[str, int, int], tuple[torch.Tensor, torch.Tensor]],
    settings: Settings,
) -> Restore:
    """Load this rank's checkpoint from the folder `path`: its stages' weights, gradients and optimizer
    state go into `stages`, its in-flight forwards are recomputed on them, the mailman gets the pair
    orders after the cut and sends again what crosses it; the rest is the Restore value the rank's
    Runtime starts from."""
    state = read_rank_file(path, rank, settings.device)
    step, plan = state["step"], plans[rank]
    for stage, saved in state["stages"].items():
        _load_stage(stages[stage], saved)
    forwards = _recompute(plan, stages, state["forwards"], batch, settings.loss_scale)
    for stage, version in plan.releases.get(state["index"], ()):
        stages[stage].release(version)
    rank_of = layout.placement.__getitem__
    resend, skip = crossing(plans, rank_of, step)
    mailman.set_orders(resume_orders(plans, rank_of, step, resend))
    again = sorted(state["resend"].items(), key=lambda item: plan.send_index[item[0]])
    if again:
        mailman.exchange(sends=again, recvs=[])
    return Restore(
        cut=state["index"],
        inputs={key: tensor.requires_grad_() for key, tensor in _keyed(state["inputs"]).items()},
        grads=_keyed(state["grads"]),
        grad_out=_keyed(state["grad_out"]),
        forwards=forwards,
        losses=state["losses"],
        vals=state["vals"],
        skip_sends=frozenset(plan.send_index[m] for m in skip if rank_of(m.src) == rank),
    )


def _recompute(plan: RankPlan, stages: dict[int, StageState], saved: dict, batch, loss_scale: float) -> dict:
    """The in-flight forwards run again in program order, each exactly as it first ran."""
    forward_at = {MicrobatchKey.of(op): i for i, op in enumerate(plan.ops) if op.kind is Kind.F}
    split = {MicrobatchKey.of(op) for op in plan.ops if op.kind is Kind.I}
    forwards: dict[MicrobatchKey, Forward] = {}
    for key in sorted(map(MicrobatchKey._make, saved), key=forward_at.__getitem__):
        index, entry = forward_at[key], saved[tuple(key)]
        op, state = plan.ops[index], stages[key.stage]
        x = entry["x"].requires_grad_() if not state.first else entry["x"]
        version, frozen = op.version, index in plan.frozen_forward
        if version != state.store.live and not state.store.copy_on_write:
            live = state.store.swap_in(version)  # CURRENT: old values, graph aliasing the live weights
            version, frozen = state.store.live, True
        leaves = weights_for(state, version, frozen, forwards)
        record = run_forward(state, x, leaves, version=version, split=key in split)
        if version != op.version:
            state.store.swap_out(live)
            record.version = op.version
        if state.last:
            targets = batch("train", op.step, op.microbatch)[1]
            record.out = loss_fn(record.out, targets) * loss_scale
        record.grad = entry["grad"]
        forwards[key] = record
    return forwards


def _keyed(tensors: dict) -> dict[MicrobatchKey, torch.Tensor]:
    return {MicrobatchKey(*key): tensor for key, tensor in tensors.items()}


def _load_stage(stage_state: StageState, saved: dict) -> None:
    stage_state.store.load_state_dict(saved["store"])
    for param, grad in zip(stage_state.params, saved["grads"], strict=True):
        param.grad = grad
    if stage_state.optimizer is not None:
        stage_state.optimizer.load_state_dict(saved["optimizer"])

"""Checkpoints at step boundaries, and resuming from one bit-identically (CPU, same thread count).

    runs/NAME/checkpoints/step-000010/rank0.pt     what rank 0 held at its cut after 10 steps
    runs/NAME/checkpoints/step-000010/rank0.json   its marker (size and SHA-256), written last

The files, their verification and pruning are executor.checkpoint_files; this module is what goes in
them and how a rank starts again from them.

Asynchronous schedules never drain, so there is no moment when the whole pipeline is empty. Each rank
saves at its own cut (right after its last update of the step, see executor.program), and what crosses
the cut is statically known from the action lists:

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

from pathlib import Path

import torch

from executor.assemble import Assembly
from executor.checkpoint_files import prune, write_rank_file
from executor.program import Message, RankPlan
from executor.runtime import Forward, Runtime


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


def attach(runtime: Runtime, assembly: Assembly, root: Path, resume_from: str | None) -> None:
    """Make `runtime` save checkpoints under `root` (a run folder's checkpoints/) at the configured cuts,
    rank 0 pruning the old ones, and start it from the checkpoint folder `resume_from` when given."""
    plans, layout = assembly.plans, assembly.schedule.layout
    rank_of = layout.placement.__getitem__
    steps = sorted(assembly.config.checkpoint_steps())
    mine = {
        step: {m for m in crossing(plans, rank_of, step)[0] if rank_of(m.src) == runtime.rank}
        for step in steps
    }
    runtime.keep_sent = frozenset().union(*mine.values()) if mine else frozenset()

    def on_cut(step: int, index: int) -> None:
        if step in mine:
            save(runtime, root, step, mine[step])
            later = set().union(*(mine[s] for s in steps if s > step))
            for message in mine[step] - later:
                runtime.kept.pop(message, None)
            if runtime.rank == 0:
                prune(root, len(plans), assembly.config.keep_checkpoints)

    runtime.on_cut = on_cut
    if resume_from is not None:
        restore(runtime, assembly, Path(resume_from))


def save(runtime: Runtime, root: Path, step: int, resend: set[Message]) -> None:
    """Write this rank's state at its cut of `step` (the .pt, then the marker that proves it whole)."""
    state = {
        "step": step,
        "index": runtime.index,
        "stages": {s: _stage_state(state) for s, state in runtime.stages.items()},
        "inputs": _detached(runtime.inputs),
        "grads": _detached(runtime.grads),
        "grad_out": _detached(runtime.grad_out),
        "forwards": {
            key: {"x": r.x.detach().clone(), "version": r.version, "grad": r.grad}
            for key, r in runtime.forwards.items()
        },
        "resend": {message: runtime.kept[message] for message in resend},
        "losses": list(runtime.losses),
        "vals": list(runtime.vals),
    }
    write_rank_file(root, step, runtime.rank, state, runtime.clock())


def _stage_state(state) -> dict:
    return {
        "store": state.store.state_dict(),
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in state.params],
        "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
    }


def _detached(tensors: dict) -> dict:
    return {key: tensor.detach().clone() for key, tensor in tensors.items()}


def restore(runtime: Runtime, assembly: Assembly, path: Path) -> None:
    """Load this rank's checkpoint, recompute its in-flight forwards, re-send what crosses the cut."""
    state = torch.load(
        path / f"rank{runtime.rank}.pt", map_location=runtime.settings.device, weights_only=False
    )
    step = state["step"]
    for stage, saved in state["stages"].items():
        _load_stage(runtime.stages[stage], saved)
    runtime.optimizer_bytes = sum(s.optimizer.state_bytes() for s in runtime.stages.values() if s.optimizer)
    runtime.inputs = {k: v.requires_grad_() for k, v in state["inputs"].items()}
    runtime.grads, runtime.grad_out = state["grads"], state["grad_out"]
    runtime.losses, runtime.vals = state["losses"], state["vals"]  # the log has them from before the cut
    for key, saved in sorted(state["forwards"].items(), key=lambda item: _forward_index(runtime, item[0])):
        runtime.forwards[key] = _recompute(runtime, key, saved)
    for stage, version in runtime.plan.releases.get(state["index"], ()):
        runtime.stages[stage].release(version)
    plans, rank_of = assembly.plans, assembly.schedule.layout.placement.__getitem__
    resend, skip = crossing(plans, rank_of, step)
    runtime.mailman.set_orders(resume_orders(plans, rank_of, step, resend))
    runtime.skip_sends = frozenset(runtime.plan.send_index[m] for m in skip if rank_of(m.src) == runtime.rank)
    runtime.index = state["index"] + 1
    again = sorted(state["resend"].items(), key=lambda item: runtime.plan.send_index[item[0]])
    if again:
        runtime.mailman.exchange(sends=again, recvs=[])


def _load_stage(stage_state, saved: dict) -> None:
    stage_state.store.load_state_dict(saved["store"])
    for param, grad in zip(stage_state.params, saved["grads"], strict=True):
        param.grad = grad
    if stage_state.optimizer is not None:
        stage_state.optimizer.load_state_dict(saved["optimizer"])


def _forward_index(runtime: Runtime, key) -> int:
    for index, op in enumerate(runtime.plan.ops):
        if op.kind == "F" and (op.stage, op.step, op.microbatch) == key:
            return index
    raise KeyError(key)


def _recompute(runtime: Runtime, key, saved: dict) -> Forward:
    """Run the forward of an in-flight microbatch again, exactly as it first ran."""
    index = _forward_index(runtime, key)
    op, state = runtime.plan.ops[index], runtime.stages[key[0]]
    x = saved["x"].requires_grad_() if not state.first else saved["x"]
    frozen = index in runtime.plan.frozen_forward
    if op.version != state.store.live and not state.store.copy_on_write:
        live = state.store.swap_in(op.version)  # CURRENT: old values, graph aliasing the live weights
        record = runtime.forward_graph(state, op._replace(version=state.store.live), x, frozen=True)
        state.store.swap_out(live)
        record.version = op.version
    else:
        record = runtime.forward_graph(state, op, x, frozen=frozen)
    if state.last:
        from executor.model import loss_fn

        targets = runtime.batch("train", op.step, op.microbatch)[1]
        record.out = loss_fn(record.out, targets) * runtime.settings.loss_scale
    record.grad = saved["grad"]
    return record

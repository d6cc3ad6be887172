"""The interpreter of one rank: walk the rank's program, one short handler per kind of op.

    runtime = Runtime(rank=0, plan=plans[0], layout=schedule.layout, stages=..., mailman=..., ...)
    runtime.run()                    # distributed mode: op by op, consecutive sends/receives batched
    runtime.step_once()              # single-process mode: one op if it can run now (executor.run.local)

State is keyed by (stage, step, microbatch), program.MicrobatchKey: the forward's graph until its
backward, received activations and gradients until they are consumed. Weight versions live in
versions, the decisions about them (frozen forwards, kept versions) were taken statically in program;
what a forward runs on and each backward computes is compute. What the interpreter does per op is
decided once, before the first op runs (entries). A runtime is wired once, when built (hooks):
settings, hooks, and the checkpoint a resumed rank starts from. (All modules of executor.interpreter.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from executor.interpreter.comm import Mailman
from executor.interpreter.compute import Forward, run_backward, run_forward, unwear, weights_for
from executor.interpreter.entries import RECV_OPS, Entry, compile_entries
from executor.interpreter.gradnorm import GlobalNorm
from executor.interpreter.hooks import Hooks, Restore, Settings
from executor.interpreter.ledger import Ledger
from executor.interpreter.memory import MemoryCount
from executor.interpreter.program import CUT, EVAL_F, EVAL_RECV, EVAL_SEND, NORM, MicrobatchKey, Op, RankPlan
from executor.interpreter.stage import StageState
from executor.interpreter.validation import Validation
from executor.interpreter.versions import accumulate, flatten, unflatten
from executor.training.model import loss_fn
from schedules.ir import Kind, Layout
from schedules.semantics import Message


class Runtime:
    """One rank's interpreter. `ops[i]` runs through `handlers[ops[i].kind]`."""

    def __init__(
        self,
        *,
        rank: int,
        plan: RankPlan,
        layout: Layout,
        stages: dict[int, StageState],
        mailman: Mailman,
        batch: Callable[[str, int, int], tuple[torch.Tensor, torch.Tensor]],
        settings: Settings,
        hooks: Hooks | None = None,
        restore: Restore | None = None,
    ) -> None:
        self.rank, self.plan, self.layout, self.stages = rank, plan, layout, stages
        hooks = hooks if hooks is not None else Hooks()
        self.mailman, self.batch, self.settings, self.hooks = mailman, batch, settings, hooks
        self.recorder, self.clock, self.timer = hooks.recorder, hooks.clock, hooks.timer
        self.inputs: dict[MicrobatchKey, torch.Tensor] = {}
        self.grads: dict[MicrobatchKey, torch.Tensor] = {}
        self.grad_out: dict[MicrobatchKey, torch.Tensor] = {}
        self.forwards: dict[MicrobatchKey, Forward] = {}
        self.pending = (self.inputs, self.grads, self.grad_out)
        """The received (or handed-over) tensors not consumed yet, as the memory count reads them."""
        self.split_keys = frozenset(MicrobatchKey.of(op) for op in plan.ops if op.kind is Kind.I)
        self.batches: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        """Training batches made ahead (see Entry.prefetch), until their forward takes them."""
        self.losses: list[tuple[int, int, float, float]] = []
        validation = dict(microbatches=settings.val_microbatches, clock=self.clock, recorder=self.recorder)
        self.validation = Validation(rank=rank, layout=layout, stages=stages, batch=batch, **validation)
        self.kept: dict[Message, torch.Tensor] = {}
        """Sent tensors that hooks.on_cut still needs (Hooks.keep_sent)."""
        self.started: set[int] = set()
        self.sent_bytes: dict[int, int] = {}
        self.skip_sends: frozenset[int] = frozenset()
        self.index = 0
        self.entries: list[Entry] | None = None
        self.memory = MemoryCount(stages, settings.device if settings.allocator_memory else None)
        self.global_norm = GlobalNorm(mailman, stages, settings.device)
        self.ledger = Ledger(plan.joins)  # which update each buffered gradient joins (schedules.semantics)
        self.handlers: dict[str, Callable[[Op], None]] = {
            Kind.F: self._forward,
            Kind.B: lambda op: self._backward(op, want_input=True, want_weights=True),
            Kind.I: lambda op: self._backward(op, want_input=True, want_weights=False),
            Kind.W: lambda op: self._backward(op, want_input=False, want_weights=True),
            Kind.OPT: self._optimizer_step,
            # DualPipe's overlapped pair: this interpreter runs its F and then its backward, one after the
            # other (the next two ops); the marker only keeps the pair in the trace, as the simulator does
            Kind.OVERLAP_F_B: lambda op: None,
            Kind.SEND_F: self._send,
            Kind.SEND_B: self._send,
            Kind.SEND_G: self._send,
            Kind.SEND_W: self._send,
            Kind.RECV_F: self._recv_activation,
            Kind.RECV_B: self._recv_grad,
            Kind.RECV_G: self._recv_weight_grad,
            Kind.RECV_W: self._recv_weights,
            EVAL_RECV: self._eval_recv,
            EVAL_F: self._eval_forward,
            EVAL_SEND: self._send,
            NORM: lambda op: self.global_norm.run(op.step, self.settings.timeout),
            CUT: self._cut,
        }
        if restore is not None:
            self._resume(restore)

    # ---- driving -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.index >= len(self.plan.ops)

    @property
    def vals(self) -> list[tuple[int, float, float]]:
        """(step, validation loss, time) measured on this rank (its last stage; see validation)."""
        return self.validation.vals

    def run(self) -> None:
        """Run the rest of the program; consecutive communication ops start as one batch."""
        program, execute, started = self.program(), self._execute, self.started
        while self.index < len(program):
            index = self.index
            end = program[index].comm_end
            if end and index not in started:
                self._start_batch(index, end)
            execute(index)

    def step_once(self) -> bool:
        """Run the next op if it can run without waiting; False if it would wait (or nothing is left)."""
        if self.done:
            return False
        op = self.program()[self.index].op
        if op.kind in RECV_OPS and not self.mailman.ready(self.plan.messages[self.index]):
            return False
        if op.kind == NORM and not self.global_norm.ready(op.step):
            return False
        self._execute(self.index)
        return True

    def program(self) -> list[Entry]:
        """The plan's ops with their handlers and flags (executor.interpreter.entries), built once, when
        the first op runs (so a test may still swap a handler or the plan before that) or when asked."""
        if self.entries is None:
            self.entries = compile_entries(self.plan, self.handlers, self.stages, trace=self.settings.trace)
        return self.entries

    def _resume(self, restore: Restore) -> None:
        """Start after the checkpoint's cut, holding what the rank held there (executor.run.checkpoint)."""
        self.inputs.update(restore.inputs)
        self.grads.update(restore.grads)
        self.grad_out.update(restore.grad_out)
        self.forwards.update(restore.forwards)
        self.losses, self.validation.vals = list(restore.losses), list(restore.vals)  # the log has them
        self.skip_sends = restore.skip_sends
        self.index = restore.cut + 1

    def _execute(self, index: int) -> None:
        entry = self.entries[index]
        op = entry.op
        before_op = self.hooks.before_op
        if before_op is not None:
            before_op(index, op)
        timer = self.timer if entry.timed else None
        start = self.clock() if timer is None else timer.begin()
        moved = entry.handler(op) or (self.sent_bytes.pop(index, 0) if entry.comm_end else 0)
        end = self.clock() if timer is None else timer.begin()
        if entry.comm_end:
            self.started.discard(index)
        if entry.releases:
            for stage, version in entry.releases:
                self.stages[stage].release(version)
            self.memory.weights_changed()
        self.index = index + 1
        if entry.grads:
            self.memory.grads_changed(entry.grads)
        if self.recorder is not None and entry.traced:
            memory = self.memory.held(self.forwards, self.pending)
            if timer is not None:  # device times are known later (CUDA events): the event is written then
                timer.later(start, end, lambda s, e: self.recorder.event(index, op, s, e, moved, memory))
            else:
                self.recorder.event(index, op, start, end, moved, memory)

    def _start_batch(self, begin: int, end: int) -> None:
        sends, recvs = [], []
        messages = self.plan.messages
        for index in range(begin, end):
            op = self.entries[index].op
            if op.kind in RECV_OPS:
                recvs.append(messages[index])
            else:
                payload = self._payload(op)  # always: a SEND_G also empties the gradient buffer
                if index not in self.skip_sends:
                    sends.append((messages[index], payload))
                    self.sent_bytes[index] = payload.nbytes
                    self._keep(*sends[-1])
            self.started.add(index)
        self.mailman.exchange(sends=sends, recvs=recvs)

    # ---- compute -------------------------------------------------------------------------------

    def _forward(self, op: Op) -> None:
        state, key = self.stages[op.stage], MicrobatchKey.of(op)
        data = None
        if state.first or state.last:
            made = self.batches.pop((op.step, op.microbatch), None)
            data = made or self.batch("train", op.step, op.microbatch)
        x, targets = data if state.first else (self.inputs.pop(key), data[1] if state.last else None)
        record = self.forward_graph(state, op, x, frozen=self.index in self.plan.frozen_forward)
        if state.last:
            loss = loss_fn(record.out, targets)
            if self.timer is None:
                self._note_loss(op.step, op.microbatch, loss.item(), self.clock())
            else:  # on a device: read back with the step's event times (timer.flush), no wait here
                done, value = self.timer.begin(), loss.detach()
                note = lambda _, end: self._note_loss(op.step, op.microbatch, value.item(), end)  # noqa: E731
                self.timer.later(done, done, note)
            record.out = loss * self.settings.loss_scale
        else:
            self._hand_off(self.layout.next_stage(op.stage), key, record.out, self.inputs, requires_grad=True)
        self.forwards[key] = record

    def _note_loss(self, step: int, microbatch: int, loss: float, time: float) -> None:
        self.losses.append((step, microbatch, loss, time))
        if self.recorder is not None:
            self.recorder.loss(step, microbatch, loss, time)

    def forward_graph(self, state: StageState, op: Op, x: torch.Tensor, *, frozen: bool) -> Forward:
        """Run the stage on the version `op` reads: live weights, or leaves over a kept / aliased copy."""
        leaves = self._weights(state, op.version, frozen)
        split = MicrobatchKey.of(op) in self.split_keys
        return run_forward(state, x, leaves, version=op.version, split=split)

    def _weights(self, state: StageState, version: int, frozen: bool) -> list[torch.Tensor] | None:
        return weights_for(state, version, frozen, self.forwards)

    def _unwear(self, state: StageState) -> None:
        unwear(state, self.forwards)

    def _backward(self, op: Op, *, want_input: bool, want_weights: bool) -> None:
        state, key = self.stages[op.stage], MicrobatchKey.of(op)
        record = self.forwards[key]
        self._check_version(state, op, record)
        if want_weights:
            self.ledger.accumulated(self.index, op.stage)
        if record.grad is None and not state.last:
            record.grad = self.grads.pop(key)
        grad_x, finished = run_backward(state, record, want_input=want_input, want_weights=want_weights)
        if finished:
            del self.forwards[key]
        if grad_x is not None:
            self._hand_off(self.layout.prev_stage(op.stage), key, grad_x, self.grads, requires_grad=False)

    def _hand_off(
        self, stage: int | None, key: MicrobatchKey, tensor: torch.Tensor, local: dict, *, requires_grad: bool
    ) -> None:
        """Give a neighbour stage its tensor (an activation, which the neighbour differentiates: it
        requires grad; or an input gradient): in place if it lives here, else keep a gradient for its
        send (an activation's send takes it from the forward's record)."""
        if stage is None:
            return
        if self.layout.placement[stage] == self.rank:
            value = tensor.detach()
            local[key._replace(stage=stage)] = value.requires_grad_() if requires_grad else value
        elif not requires_grad:
            self.grad_out[key] = tensor

    def _check_version(self, state: StageState, op: Op, record: Forward) -> None:
        expected = record.version if state.store.copy_on_write else state.store.live
        if op.version != expected:
            raise RuntimeError(f"{op} reads weight version {op.version}, the store holds {expected}")

    def _optimizer_step(self, op: Op) -> None:
        state = self.stages[op.stage]
        self._unwear(state)  # the update writes the live version
        self.ledger.applied(op)
        if self.hooks.on_update is not None:
            self.hooks.on_update(state, op)
        live, norm = state.store.live, self.global_norm.of(op.step)
        new = state.store.update(
            keep_old=self.index in self.plan.keep_on_update,
            apply=lambda: state.optimizer.step(live, grad_norm=norm),
        )
        state.optimizer.zero_grad()
        self.memory.optimizer_changed()
        _expect_version(op, new)

    # ---- communication -------------------------------------------------------------------------

    def _payload(self, op: Op) -> torch.Tensor:
        """The tensor a send op carries (taken at the moment its batch starts)."""
        key = MicrobatchKey.of(op)
        state = self.stages[op.stage]
        if op.kind is Kind.SEND_F:
            return self.forwards[key].out.detach()
        if op.kind is Kind.SEND_B:
            return self.grad_out.pop(key)
        if op.kind == EVAL_SEND:
            return self.validation.out.pop(key)
        if op.kind is Kind.SEND_G:
            self.ledger.handed_over(op.stage)
            flat = flatten([p.grad if p.grad is not None else torch.zeros_like(p) for p in state.params])
            for param in state.params:
                param.grad = None
            return flat
        _expect_version(op, state.store.live)  # SEND_W
        self._unwear(state)
        return flatten([p.detach() for p in state.params])

    def _send(self, op: Op) -> int:
        if self.index in self.started:
            return 0
        payload = self._payload(op)
        if self.index in self.skip_sends:  # received before the receiver's checkpoint: resumed past it
            return 0
        message = self.plan.messages[self.index]
        self.mailman.exchange(sends=[(message, payload)], recvs=[])
        self._keep(message, payload)
        return payload.nbytes

    def _keep(self, message: Message, payload: torch.Tensor) -> None:
        """Keep a sent tensor that a checkpoint must hold (its receive falls after the receiver's cut)."""
        if message in self.hooks.keep_sent:
            self.kept[message] = payload.detach().clone()

    def _take(self, op: Op) -> torch.Tensor:
        prefetch = self.entries[self.index].prefetch
        if prefetch is not None and prefetch[0] not in self.batches:  # (the next one is never used yet)
            for step, microbatch in prefetch:
                if (step, microbatch) not in self.batches:
                    self.batches[step, microbatch] = self.batch("train", step, microbatch)
        return self.mailman.take(self.plan.messages[self.index], timeout=self.settings.timeout)

    def _recv_activation(self, op: Op) -> int:
        tensor = self._take(op)
        self.inputs[MicrobatchKey.of(op)] = tensor.requires_grad_()
        return tensor.nbytes

    def _recv_grad(self, op: Op) -> int:
        tensor = self._take(op)
        self.grads[MicrobatchKey.of(op)] = tensor
        return tensor.nbytes

    def _recv_weight_grad(self, op: Op) -> int:
        flat = self._take(op)
        accumulate(self.stages[op.stage].params, unflatten(flat, self.stages[op.stage].params))
        return flat.nbytes

    def _recv_weights(self, op: Op) -> int:
        flat = self._take(op)
        state = self.stages[op.stage]
        self._unwear(state)
        self.ledger.applied(op)

        @torch.no_grad()
        def write() -> None:
            for param, value in zip(state.params, unflatten(flat, state.params), strict=True):
                param.copy_(value)

        _expect_version(op, state.store.update(keep_old=self.index in self.plan.keep_on_update, apply=write))
        self.memory.weights_changed()
        return flat.nbytes

    # ---- validation and step boundaries ---------------------------------------------------------

    def _eval_recv(self, op: Op) -> int:
        tensor = self._take(op)
        self.validation.inputs[MicrobatchKey.of(op)] = tensor
        return tensor.nbytes

    def _eval_forward(self, op: Op) -> None:
        self._unwear(self.stages[op.stage])  # validation reads the live weights
        self.validation.forward(op)

    def _cut(self, op: Op) -> None:
        self.global_norm.forget(op.step)
        for state in self.stages.values():  # a checkpoint, or whatever follows the step, sees live weights
            self._unwear(state)
        if self.timer is not None:
            self.timer.flush()
        if self.recorder is not None:
            self.recorder.cut(op.step, self.clock())
        if self.hooks.on_cut is not None:
            self.hooks.on_cut(self, op.step)

    # ---- accounting ----------------------------------------------------------------------------

    def held_bytes(self) -> int:
        """Bytes this rank holds now (see executor.interpreter.memory)."""
        return self.memory.held(self.forwards, self.pending)

    def finish(self) -> None:
        """After the last op: emit the events still waiting for their device times; live weights."""
        if self.timer is not None:
            self.timer.flush()
        for state in self.stages.values():
            self._unwear(state)


def _expect_version(op: Op, version: int) -> None:
    if op.version is not None and op.version != version:
        raise RuntimeError(f"{op} expects weight version {op.version}, the store has {version}")

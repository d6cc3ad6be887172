"""The interpreter of one rank: walk the rank's program, one short handler per kind of op.

    runtime = Runtime(rank=0, plan=plans[0], layout=schedule.layout, stages=..., mailman=..., ...)
    runtime.run()                    # distributed mode: op by op, consecutive sends/receives batched
    runtime.step_once()              # single-process mode: one op if it can run now (executor.local)

State is keyed by (stage, step, microbatch): the forward's graph until its backward, received
activations and gradients until they are consumed. Weight versions live in executor.versions; the
decisions about them (frozen forwards, kept versions) were taken statically in executor.program, and
what a forward of a version runs on (the parameters, worn or live, or leaves) is executor.stage.

What the interpreter does per op is decided once, before the first op runs (`program()`: the handler,
whether the op is recorded or timed, the batch of sends and receives it starts, the versions it
releases, the batches to make while a receive waits), so the loop itself only looks things up: where
each action is cheap (a small model, a fast device), the interpreter's own cost is the step time.

Note: what each backward computes, per kind (x: the stage's input, out: its output or scaled loss):

    B   d out / d x  and  d out / d weights      (one autograd pass)
    I   d out / d x, the Linears' weight-gradient closures stored, graph freed   (executor.weightgrad)
    W   d out / d weights: the stored weight-gradient GEMMs only, no autograd pass
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from executor.comm import Mailman
from executor.gradnorm import GlobalNorm
from executor.ledger import Ledger
from executor.memory import SavedBytes, held_bytes
from executor.model import loss_fn
from executor.program import CUT, EVAL_F, EVAL_RECV, EVAL_SEND, NORM, Extra, Message, Op, RankPlan
from executor.stage import StageState, lent
from executor.versions import accumulate, flatten, unflatten
from executor.weightgrad import WeightGrads
from schedules.ir import COMM_KINDS, Kind, Layout

Key = tuple[int, int, int | None]  # (stage, step, microbatch)
RECV_OPS = frozenset({Kind.RECV_F, Kind.RECV_B, Kind.RECV_G, Kind.RECV_W, EVAL_RECV})
ALL_COMM = frozenset(COMM_KINDS | {EVAL_RECV, EVAL_SEND})
TIMED_KINDS = frozenset({Kind.F, Kind.B, Kind.I, Kind.W, Kind.OPT})
ADDING_KINDS = frozenset({Kind.B, Kind.I, Kind.W, Kind.RECV_G})
"""Ops that add into the gradient buffers (param.grad), making the ones still missing."""
RESETTING_KINDS = frozenset({Kind.OPT, Kind.SEND_G})
"""Ops that empty the gradient buffers."""


class Entry(NamedTuple):
    """One op of the program with what the interpreter decides about it before the run starts."""

    op: Op
    handler: Callable[[Op], int | None]
    traced: bool
    """Recorded: an action of the schedule (not one of the executor's own ops), in a traced run."""
    timed: bool
    """A compute op: timed by the device timer where there is one."""
    comm_end: int
    """For a communication op, the end of its run of consecutive communication ops (one batch); else 0."""
    releases: tuple[tuple[int, int], ...]
    """(stage, version) pairs no longer read once the op has run."""
    grads: int
    """0: the op leaves the gradient buffers alone; 1: it adds into them; 2: it empties them (the memory
    count looks at the buffers again after a 2, and after a 1 while some were missing)."""
    prefetch: tuple[tuple[int, int], ...] | None = None
    """For a receive: the training batches (step, microbatch) that the rank's forwards on data need
    from the next one to the end of its step, made together while the receive waits rather than one
    by one on the forwards' critical path (made in one go, each also costs a quarter as much)."""


@dataclass
class Forward:
    """A forward whose backward has not finished: what the backward needs."""

    x: torch.Tensor
    out: torch.Tensor
    leaves: list[torch.Tensor] | None
    version: int
    grad: torch.Tensor | None = None
    sink: WeightGrads | None = None
    """Set where an I/W pair differentiates this forward: what the I defers to the W."""


@dataclass
class Settings:
    """What the interpreter needs besides the plan (see RunConfig for the user-facing settings)."""

    loss_scale: float
    """Multiplies each microbatch's loss before its backward (1/m where gradients accumulate)."""
    val_microbatches: int = 1
    timeout: float | None = None
    """Seconds a receive may wait (None: forever)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    trace: bool = True
    """Record every action's event (False: losses, validation and step boundaries only)."""


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
        recorder=None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.rank, self.plan, self.layout, self.stages = rank, plan, layout, stages
        self.mailman, self.batch, self.settings = mailman, batch, settings
        self.recorder, self.clock = recorder, clock
        self.inputs: dict[Key, torch.Tensor] = {}
        self.grads: dict[Key, torch.Tensor] = {}
        self.grad_out: dict[Key, torch.Tensor] = {}
        self.forwards: dict[Key, Forward] = {}
        self.split_keys = frozenset(
            (op.stage, op.step, op.microbatch) for op in plan.ops if op.kind is Kind.I
        )
        self.batches: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        """Training batches made ahead (see Entry.prefetch), until their forward takes them."""
        self.eval_inputs: dict[Key, torch.Tensor] = {}
        self.eval_out: dict[Key, torch.Tensor] = {}
        self.eval_losses: list[float] = []
        self.losses: list[tuple[int, int, float, float]] = []
        self.vals: list[tuple[int, float, float]] = []
        self.keep_sent: frozenset[Message] = frozenset()
        self.kept: dict[Message, torch.Tensor] = {}
        self.started: set[int] = set()
        self.sent_bytes: dict[int, int] = {}
        self.skip_sends: frozenset[int] = frozenset()
        self.index = 0
        self.entries: list[Entry] | None = None
        self.grad_bytes: int | None = None
        """Bytes of the gradient buffers, counted again after an op that may change them (see memory)."""
        self.grads_complete = False
        """Every parameter had a gradient buffer when they were last counted (adding changes no size)."""
        self.before_op: Callable[[int, Op], None] | None = None
        self.timer = None  # a device timer (executor.worker.CudaTimer) for the compute ops on CUDA
        self.on_update: Callable[[StageState, Op], None] | None = None
        self.on_cut: Callable[[int, int], None] | None = None
        self.optimizer_bytes = sum(s.optimizer.state_bytes() for s in stages.values() if s.optimizer)
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

    # ---- driving -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.index >= len(self.plan.ops)

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
        """The plan's ops with their handlers and flags, built once, when the first op runs (so a test may
        still swap a handler or the plan before that) or when asked for."""
        if self.entries is None:
            entries = [self._entry(index, op) for index, op in enumerate(self.plan.ops)]
            upcoming: tuple[tuple[int, int], ...] | None = None
            for index in range(len(entries) - 1, -1, -1):
                op = entries[index].op
                if op.kind in RECV_OPS:
                    entries[index] = entries[index]._replace(prefetch=upcoming)
                elif op.kind is Kind.F and (self.stages[op.stage].first or self.stages[op.stage].last):
                    same_step = upcoming is not None and upcoming[0][0] == op.step
                    upcoming = ((op.step, op.microbatch),) + (upcoming if same_step else ())
            self.entries = entries
        return self.entries

    def _entry(self, index: int, op: Op) -> Entry:
        ops, end = self.plan.ops, 0
        if op.kind in ALL_COMM:
            end = index + 1
            while end < len(ops) and ops[end].kind in ALL_COMM:
                end += 1
        return Entry(
            op=op,
            handler=self.handlers[op.kind],
            traced=self.settings.trace and not isinstance(op, Extra),
            timed=op.kind in TIMED_KINDS,
            comm_end=end,
            releases=self.plan.releases.get(index, ()),
            grads=2 if op.kind in RESETTING_KINDS else int(op.kind in ADDING_KINDS),
        )

    def _execute(self, index: int) -> None:
        entry = self.entries[index]
        op = entry.op
        if self.before_op is not None:
            self.before_op(index, op)
        timer = self.timer if entry.timed else None
        start = self.clock() if timer is None else timer.begin()
        moved = entry.handler(op) or (self.sent_bytes.pop(index, 0) if entry.comm_end else 0)
        end = self.clock() if timer is None else timer.begin()
        if entry.comm_end:
            self.started.discard(index)
        for stage, version in entry.releases:
            self.stages[stage].release(version)
        self.index = index + 1
        if entry.grads > self.grads_complete:
            self.grad_bytes = None
        if self.recorder is not None and entry.traced:
            memory = self.held_bytes()
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
        state, key = self.stages[op.stage], (op.stage, op.step, op.microbatch)
        data = None
        if state.first or state.last:
            data = self.batches.pop(key[1:], None) or self.batch("train", op.step, op.microbatch)
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
            self._hand_off(self.layout.next_stage(op.stage), key, record.out, self.inputs, grad=True)
        self.forwards[key] = record

    def _note_loss(self, step: int, microbatch: int, loss: float, time: float) -> None:
        self.losses.append((step, microbatch, loss, time))
        if self.recorder is not None:
            self.recorder.loss(step, microbatch, loss, time)

    def forward_graph(self, state: StageState, op: Op, x: torch.Tensor, *, frozen: bool) -> Forward:
        """Run the stage on the version `op` reads: live weights, or leaves over a kept / aliased copy."""
        leaves = self._weights(state, op.version, frozen)
        split = (op.stage, op.step, op.microbatch) in self.split_keys
        sink = WeightGrads(leaves or state.params) if split else None
        with sink.recording(state.module) if sink is not None else nullcontext():
            if state.saved_bytes is None:
                with SavedBytes(state) as counter:
                    out = self._call(state, x, leaves)
                state.saved_bytes = counter.total
            else:
                out = self._call(state, x, leaves)
        return Forward(x=x, out=out, leaves=leaves, version=op.version, sink=sink)

    def _weights(self, state: StageState, version: int, frozen: bool) -> list[torch.Tensor] | None:
        """Leaves for a forward of `version`, or None: run on the parameters, made to hold it if they
        may (2BW: the older buffer, worn for the rest of the minibatch, see StageState.wear). A frozen
        forward always gets leaves: an update comes before its backward."""
        if frozen:
            return state.leaves(version, frozen=True)
        wearable = version == state.store.live or version in state.store.old
        if version != state.holds and state.store.copy_on_write and wearable and not self._reading(state):
            state.wear(version)
        return None if version == state.holds else state.leaves(version, frozen=False)

    def _reading(self, state: StageState) -> bool:
        """Whether a graph in flight reads the stage's parameters themselves (not leaves)."""
        return any(key[0] == state.stage and r.leaves is None for key, r in self.forwards.items())

    def _unwear(self, state: StageState) -> None:
        if state.worn is not None:
            if self._reading(state):
                raise RuntimeError(
                    f"stage {state.stage}: its live weights are needed while a graph reads "
                    f"version {state.worn}"
                )
            state.unwear()

    @staticmethod
    def _call(state: StageState, x: torch.Tensor, leaves: list[torch.Tensor] | None) -> torch.Tensor:
        return state.module(x) if leaves is None else state.call(x, leaves)

    def _backward(self, op: Op, *, want_input: bool, want_weights: bool) -> None:
        state, key = self.stages[op.stage], (op.stage, op.step, op.microbatch)
        record = self.forwards[key]
        self._check_version(state, op, record)
        if want_weights:
            self.ledger.accumulated(self.index, op.stage)
        if record.grad is None and not state.last:
            record.grad = self.grads.pop(key)
        sink = record.sink
        if sink is not None and not want_weights:  # an I: the chain now, the weight GEMMs kept for its W
            grad_x = sink.backward_input(record.out, record.grad, None if state.first else record.x)
        elif sink is not None and sink.ready:  # its W: the stored GEMMs only
            accumulate(state.params, sink.weight_grads())
            del self.forwards[key]
            return
        else:
            grad_x = self._autograd_backward(state, key, record, want_input, want_weights)
        if grad_x is not None:
            self._hand_off(self.layout.prev_stage(op.stage), key, grad_x, self.grads, grad=False)

    def _autograd_backward(
        self, state: StageState, key: Key, record: Forward, want_input: bool, want_weights: bool
    ) -> torch.Tensor | None:
        """B (or a W whose I deferred nothing): one autograd pass; returns d out / d x where wanted."""
        want_input = want_input and not state.first
        targets = ([record.x] if want_input else []) + (
            (record.leaves or state.params) if want_weights else []
        )
        if not targets:  # the first stage's I: nothing to compute, the W does it all
            return None
        if not want_weights:  # an I without a sink: d out / d x, the graph kept for its W
            return torch.autograd.grad(record.out, targets, record.grad, retain_graph=True)[0]
        # Autograd accumulates into the gradient buffer itself: a forward on leaves (a stashed or frozen
        # version) gets the buffer lent to its leaves for the pass. Without `inputs` where every leaf of
        # the graph is wanted (the input unless it holds token ids, and all weights): its per-tensor
        # set-up, or autograd.grad's and a Python loop of additions, cost a tenth of a small backward.
        every = want_input or state.first
        with lent(state.params, record.leaves):
            torch.autograd.backward(record.out, record.grad, inputs=None if every else targets)
        del self.forwards[key]
        return record.x.grad if want_input else None

    def _hand_off(self, stage: int | None, key: Key, tensor, local: dict, *, grad: bool) -> None:
        """Give a neighbour stage its tensor: in place if it lives here, else keep it for the send."""
        if stage is None:
            return
        if self.layout.placement[stage] == self.rank:
            value = tensor.detach()
            local[(stage, key[1], key[2])] = value.requires_grad_() if grad else value
        elif not grad:
            self.grad_out[key] = tensor

    def _check_version(self, state: StageState, op: Op, record: Forward) -> None:
        expected = record.version if state.store.copy_on_write else state.store.live
        if op.version != expected:
            raise RuntimeError(f"{op} reads weight version {op.version}, the store holds {expected}")

    def _optimizer_step(self, op: Op) -> None:
        state = self.stages[op.stage]
        self._unwear(state)  # the update writes the live version
        self.ledger.applied(op)
        if self.on_update is not None:
            self.on_update(state, op)
        live, norm = state.store.live, self.global_norm.of(op.step)
        new = state.store.update(
            keep_old=self.index in self.plan.keep_on_update,
            apply=lambda: state.optimizer.step(live, grad_norm=norm),
        )
        state.optimizer.zero_grad()
        self.optimizer_bytes = sum(s.optimizer.state_bytes() for s in self.stages.values() if s.optimizer)
        _expect_version(op, new)

    # ---- communication -------------------------------------------------------------------------

    def _payload(self, op: Op) -> torch.Tensor:
        """The tensor a send op carries (taken at the moment its batch starts)."""
        key = (op.stage, op.step, op.microbatch)
        state = self.stages[op.stage]
        if op.kind is Kind.SEND_F:
            return self.forwards[key].out.detach()
        if op.kind is Kind.SEND_B:
            return self.grad_out.pop(key)
        if op.kind == EVAL_SEND:
            return self.eval_out.pop(key)
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
        if message in self.keep_sent:
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
        self.inputs[op.stage, op.step, op.microbatch] = tensor.requires_grad_()
        return tensor.nbytes

    def _recv_grad(self, op: Op) -> int:
        tensor = self._take(op)
        self.grads[op.stage, op.step, op.microbatch] = tensor
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
        return flat.nbytes

    # ---- validation and step boundaries ---------------------------------------------------------

    def _eval_recv(self, op: Op) -> int:
        tensor = self._take(op)
        self.eval_inputs[op.stage, op.step, op.microbatch] = tensor
        return tensor.nbytes

    @torch.no_grad()
    def _eval_forward(self, op: Op) -> None:
        state, key = self.stages[op.stage], (op.stage, op.step, op.microbatch)
        x = self.batch("val", 0, op.microbatch)[0] if state.first else self.eval_inputs.pop(key)
        self._unwear(state)  # validation reads the live weights
        out = state.module(x)
        if state.last:
            self.eval_losses.append(loss_fn(out, self.batch("val", 0, op.microbatch)[1]).item())
            if len(self.eval_losses) == self.settings.val_microbatches:
                self.vals.append((op.step, sum(self.eval_losses) / len(self.eval_losses), self.clock()))
                if self.recorder is not None:
                    self.recorder.val(*self.vals[-1])
                self.eval_losses = []
            return
        nxt = self.layout.next_stage(op.stage)
        if self.layout.placement[nxt] == self.rank:
            self.eval_inputs[nxt, op.step, op.microbatch] = out
        else:
            self.eval_out[key] = out

    def _cut(self, op: Op) -> None:
        self.global_norm.forget(op.step)
        for state in self.stages.values():  # a checkpoint, or whatever follows the step, sees live weights
            self._unwear(state)
        if self.timer is not None:
            self.timer.flush()
        if self.recorder is not None:
            self.recorder.cut(op.step, self.clock())
        if self.on_cut is not None:
            self.on_cut(op.step, self.index)

    # ---- accounting ----------------------------------------------------------------------------

    def held_bytes(self) -> int:
        """Bytes this rank holds now (see executor.memory)."""
        return held_bytes(self)

    def finish(self) -> None:
        """After the last op: emit the events still waiting for their device times; live weights."""
        if self.timer is not None:
            self.timer.flush()
        for state in self.stages.values():
            self._unwear(state)


def _expect_version(op: Op, version: int) -> None:
    if op.version is not None and op.version != version:
        raise RuntimeError(f"{op} expects weight version {op.version}, the store has {version}")

"""What a Runtime is built from besides its plan and its stages: its settings, the hooks a run puts
around the interpreter, and, for a resumed rank, where it starts. All three are frozen: a runtime is
wired once, when it is built, never by setting its attributes afterwards.

    hooks = Hooks(recorder=log, clock=clock.now, before_op=watchdog_hook)
    runtime = Runtime(..., settings=Settings(loss_scale=0.25), hooks=hooks, restore=None)

executor.run.assemble builds them for a run (checkpoint hooks from executor.run.checkpoint.with_saving, a
restore value from executor.run.checkpoint.load); tests pass their own hooks to observe a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from executor.interpreter.compute import Forward
from executor.interpreter.program import MicrobatchKey, Op
from executor.interpreter.stage import StageState
from schedules.semantics import Message


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the interpreter needs besides the plan (see RunConfig for the user-facing settings)."""

    loss_scale: float
    """Multiplies each microbatch's loss before its backward (1/m where gradients accumulate)."""
    val_microbatches: int = 1
    """Validation microbatches averaged into one validation loss."""
    timeout: float | None = None
    """Seconds a receive may wait (None: forever)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where the rank's tensors live."""
    allocator_memory: bool = False
    """Read the memory a rank holds from the CUDA allocator (a GPU of its own) rather than counting the
    tensors it holds (CPU, and ranks sharing one GPU in a single process, whose allocator sees them all)."""
    trace: bool = True
    """Record every action's event (False: losses, validation and step boundaries only)."""


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """What a run adds around the interpreter; every hook is optional."""

    recorder: Any = None
    """Takes the events, losses, validation losses and step boundaries (executor.run.runfolder.RankLog's
    event, loss, val and cut), or None."""
    clock: Callable[[], float] = time.perf_counter
    """Seconds on the run's common clock (executor.run.worker.Clock.now)."""
    timer: Any = None
    """A device timer for the compute ops (executor.run.worker.CudaTimer: begin, later, flush), or None:
    the clock times them."""
    before_op: Callable[[int, Op], None] | None = None
    """Called with (index, op) right before each op runs (the watchdog, a stop request, a test fault)."""
    on_update: Callable[[StageState, Op], None] | None = None
    """Called with (stage, OPT op) right before an update applies the gradient buffers."""
    on_cut: Callable[[Any, int], None] | None = None
    """Called with (the runtime, step) at each step's CUT op, the weights live (a checkpoint)."""
    keep_sent: frozenset[Message] = frozenset()
    """Sends whose tensors on_cut needs after they went (a checkpoint sends them again on resume):
    copied when sent, into Runtime.kept."""


@dataclass(frozen=True, kw_only=True)
class Restore:
    """Where a resumed rank starts: what its checkpoint held at its cut (executor.run.checkpoint.load)."""

    cut: int
    """Index of the CUT op the checkpoint was taken at: the rank goes on with the op after it."""
    inputs: dict[MicrobatchKey, torch.Tensor]
    """Received activations not yet consumed (they require grad)."""
    grads: dict[MicrobatchKey, torch.Tensor]
    """Received output gradients not yet consumed."""
    grad_out: dict[MicrobatchKey, torch.Tensor]
    """Input gradients computed, waiting for their send."""
    forwards: dict[MicrobatchKey, Forward]
    """Forwards whose backward is still to come, recomputed (same weights, same inputs, same graph)."""
    losses: list[tuple[int, int, float, float]]
    """(step, microbatch, loss, time) measured before the cut."""
    vals: list[tuple[int, float, float]]
    """(step, validation loss, time) measured before the cut."""
    skip_sends: frozenset[int]
    """Indices of sends their receiver got before its own cut: not sent again."""

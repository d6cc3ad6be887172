"""The validation forwards of one rank: the executor's own EVAL_RECV, EVAL_F and EVAL_SEND ops
(executor.interpreter.program.eval_ops), pipeline 0's stages on the validation batches, no graph kept.

    validation = Validation(rank=0, layout=layout, stages=stages, batch=batch, microbatches=2, ...)
    validation.forward(op)         # an EVAL_F, on the live weights (the runtime takes worn ones off first)

The last stage averages the losses of one step boundary's validation microbatches into one
validation loss, (step, loss, time), into `vals` and the recorder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from executor.interpreter.program import MicrobatchKey, Op
from executor.interpreter.stage import StageState
from executor.training.model import loss_fn
from schedules.ir import Layout


class Validation:
    """One rank's validation activations in flight and the losses measured."""

    def __init__(
        self,
        *,
        rank: int,
        layout: Layout,
        stages: dict[int, StageState],
        batch: Callable[[str, int, int], tuple[torch.Tensor, torch.Tensor]],
        microbatches: int,
        clock: Callable[[], float],
        recorder: Any = None,
    ) -> None:
        self.rank, self.layout, self.stages, self.batch = rank, layout, stages, batch
        self.microbatches, self.clock, self.recorder = microbatches, clock, recorder
        self.inputs: dict[MicrobatchKey, torch.Tensor] = {}
        """Activations received (or handed over on this rank), until their forward."""
        self.out: dict[MicrobatchKey, torch.Tensor] = {}
        """Activations computed, until their EVAL_SEND."""
        self.losses: list[float] = []
        """The losses of the current step boundary's microbatches so far (last stage)."""
        self.vals: list[tuple[int, float, float]] = []
        """(step, validation loss, time) per step boundary with validation (last stage)."""

    @torch.no_grad()
    def forward(self, op: Op) -> None:
        state, key = self.stages[op.stage], MicrobatchKey.of(op)
        x = self.batch("val", 0, op.microbatch)[0] if state.first else self.inputs.pop(key)
        out = state.module(x)
        if state.last:
            self._note(op, loss_fn(out, self.batch("val", 0, op.microbatch)[1]).item())
            return
        nxt = self.layout.next_stage(op.stage)
        if self.layout.placement[nxt] == self.rank:
            self.inputs[key._replace(stage=nxt)] = out
        else:
            self.out[key] = out

    def _note(self, op: Op, loss: float) -> None:
        self.losses.append(loss)
        if len(self.losses) == self.microbatches:
            self.vals.append((op.step, sum(self.losses) / len(self.losses), self.clock()))
            if self.recorder is not None:
                self.recorder.val(*self.vals[-1])
            self.losses = []

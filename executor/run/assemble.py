"""Put one rank together from a RunConfig: its stages (module, versions, optimizer), data and mailman.

    from executor.run.assemble import Assembly
    assembly = Assembly(config)                      # schedule, plans and data, shared by all ranks
    runtime = assembly.runtime(rank, transport)      # the rank's interpreter, ready to run
    runtime = assembly.runtime(rank, transport, hooks=Hooks(recorder=log), checkpoints=folder.checkpoints,
                               resume_from=checkpoint)   # logged, saving checkpoints, started from one

Used by both launch modes: executor.run.worker (one rank per process) and executor.run.local (all in one).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import torch

from executor.interpreter.comm import Mailman, Transport
from executor.interpreter.hooks import Hooks, Settings
from executor.interpreter.program import Message, eager_receives, pair_orders
from executor.interpreter.runtime import Runtime
from executor.interpreter.stage import StageState
from executor.interpreter.versions import VersionStore
from executor.run.checkpoint import load, with_saving
from executor.run.runconfig import RunConfig
from executor.training.data import Corpus, load_corpus
from executor.training.model import activation_shape, build_stages
from executor.training.optim import make_optimizer
from schedules import Kind, Schedule, Versioning
from schedules.semantics import loss_scale, stage_delays


def stage_delay(schedule: Schedule, stage: int) -> int:
    """tau_s, the age of the gradients the stage's updates apply, for PipeMare's scaling: counted on the
    run's own schedule by schedules.semantics (P-1-s for PipeDream, 1 for 2BW, 0 for AMDP and flushes)."""
    return stage_delays(schedule)[stage]


class Assembly:
    """What every rank of one run shares: the schedule, the static plans, the corpus."""

    def __init__(
        self, config: RunConfig, schedule: Schedule | None = None, corpus: Corpus | None = None
    ) -> None:
        self.config = config
        self.schedule = schedule or config.build_schedule()
        self.plans = config.build_plans(self.schedule)
        self.orders = pair_orders(self.plans, self.schedule.layout)
        self.corpus = corpus if corpus is not None else load_corpus(config.data)
        self.model_config = config.model_config

    def device(self, rank: int) -> torch.device:
        if self.config.device == "cuda":
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")

    def stages(self, rank: int, device: torch.device) -> dict[int, StageState]:
        """The rank's stages, built from the whole model so every rank sees the same initial weights."""
        config, layout = self.config, self.schedule.layout
        pieces = build_stages(self.model_config, config.pieces, config.split, config.seed)
        owners = {op.stage for op in self.plans[rank].ops if op.kind is Kind.OPT}
        states = {}
        for stage in layout.rank_stages(rank):
            module = pieces[layout.depth(stage)]
            module = (copy.deepcopy(module) if layout.pipeline(stage) else module).to(device)
            optimizer = None
            if stage in owners:
                optimizer = make_optimizer(
                    config.optimizer,
                    module,
                    stage=layout.depth(stage),
                    stages=layout.stages_per_pipeline,
                    delay=stage_delay(self.schedule, stage),
                )
            states[stage] = StageState(
                stage=stage,
                module=module,
                store=VersionStore(module, copy_on_write=self.schedule.versioning is not Versioning.CURRENT),
                optimizer=optimizer,
                first=layout.is_first(stage),
                last=layout.is_last(stage),
            )
        return states

    def batch_fn(self, device: torch.device):
        config, seq_len = self.config, self.model_config.seq_len

        @lru_cache(maxsize=8)
        def batch(split: str, step: int, microbatch: int) -> tuple[torch.Tensor, torch.Tensor]:
            inputs, targets = self.corpus.batch(
                split,
                step=step,
                microbatch=microbatch,
                microbatch_size=config.microbatch_size,
                seq_len=seq_len,
                seed=config.seed,
            )
            return inputs.to(device), targets.to(device)

        return batch

    def settings(self, device: torch.device, timeout: float | None = None) -> Settings:
        return Settings(
            loss_scale=loss_scale(self.schedule),
            val_microbatches=self.config.val_microbatches,
            timeout=self.config.timeout if timeout is None else timeout,
            device=device,
            allocator_memory=device.type == "cuda" and not self.config.single_process,
            trace=self.config.trace,
        )

    def runtime(
        self,
        rank: int,
        transport: Transport,
        *,
        hooks: Hooks | None = None,
        stages: dict[int, StageState] | None = None,
        checkpoints: Path | None = None,
        resume_from: Path | None = None,
        timeout: float | None = None,
    ) -> Runtime:
        """The rank's interpreter: on `stages` (built here unless given), saving checkpoints under
        `checkpoints` (if given), started from the checkpoint folder `resume_from` (if given); a receive
        waits up to `timeout` seconds (default: the config's --timeout)."""
        device = self.device(rank)
        stages = stages if stages is not None else self.stages(rank, device)
        mailman = self.mailman(rank, transport, stages, device)
        hooks = hooks if hooks is not None else Hooks()
        config, plans, layout = self.config, self.plans, self.schedule.layout
        if checkpoints is not None:
            steps, keep = config.checkpoint_steps(), config.keep_checkpoints
            hooks = with_saving(hooks, plans, layout, rank, steps=steps, keep=keep, root=checkpoints)
        settings, batch = self.settings(device, timeout), self.batch_fn(device)
        restore = None
        if resume_from is not None:
            restore = load(
                resume_from,
                rank=rank,
                plans=plans,
                layout=layout,
                stages=stages,
                mailman=mailman,
                batch=batch,
                settings=settings,
            )
        return Runtime(
            rank=rank,
            plan=plans[rank],
            layout=layout,
            stages=stages,
            mailman=mailman,
            batch=batch,
            settings=settings,
            hooks=hooks,
            restore=restore,
        )

    def mailman(self, rank: int, transport: Transport, stages: dict[int, StageState], device) -> Mailman:
        """The rank's sends and receives, with receive buffers shaped for each kind of message."""
        shape = activation_shape(self.model_config, self.config.microbatch_size)
        sizes = {stage: sum(p.numel() for p in state.params) for stage, state in stages.items()}

        def buffer_of(message: Message) -> torch.Tensor:
            if message.kind in ("G", "W"):
                return torch.empty(sizes[message.dst], device=device)
            return torch.empty(shape, device=device)

        rank_of = self.schedule.layout.placement.__getitem__
        settles = self.plans[rank].settles
        eager = eager_receives(self.plans[rank], self.orders, self.schedule.layout.placement)
        eager = eager if device.type == "cpu" else frozenset()
        return Mailman(rank, transport, self.orders, rank_of, buffer_of, settles, eager=eager)

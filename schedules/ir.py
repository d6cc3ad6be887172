"""The schedule IR: what every rank runs, in order, as plain immutable data.

A schedule is a per-rank list of `Action`s plus the `Layout` that places stages on ranks. Generators emit
compute-only actions (F, B, I, W); passes add communication, optimizer steps and weight versions; the
simulator and the executor only interpret the result.

Text form, compatible with torch.distributed.pipelining and extended for what it lacks:

    0F3            stage 0, forward, microbatch 3
    3I2            stage 3, backward for inputs, microbatch 2
    1SEND_F1       stage 1 sends the activation of microbatch 1 to stage 2
    0OPT           optimizer step of stage 0
    0F3@s2v1       forward of microbatch 3 of step 2, reading weight version 1
    0OPT@s2v3      optimizer step of step 2, writing version 3
    4SEND_G@s1>0   stage 4 hands the gradient it accumulated for step 1's update to stage 0 (AMDP)
    0OVERLAP_F_B5  the next two actions, 0F5 and a backward, run as one overlapped pair (DualPipeV)

`parse_action(str(a)) == a` for every action.

Note: "stage" is a *virtual* stage id, an index into `Layout.placement`. With one pipeline and no
interleaving it is the model stage; interleaved schedules have ranks * chunks stages; AMDP has
`pipelines` copies of the model, stage = pipeline * stages_per_pipeline + depth.

    AMDP, P = 4 (2 pipelines):   pipeline 0: stages 0 1 2 3 on ranks 0 1 2 3
                                 pipeline 1: stages 4 5 6 7 on ranks 3 2 1 0
    ZB-V, P = 4 (V placement):   stages 0 1 2 3 on ranks 0 1 2 3, stages 4 5 6 7 on ranks 3 2 1 0,
                                 one pipeline of 8 stages that turns on rank 3 (`v_layout`)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from schedules.errors import UserError


class ScheduleError(UserError):
    """A schedule, a schedule request or a schedule file is invalid; the message is for the user."""


class Kind(str, Enum):
    """What an action does. Values are the text-form codes."""

    F = "F"  # forward
    B = "B"  # full backward (inputs and weights)
    I = "I"  # backward for inputs only
    W = "W"  # backward for weights only
    OPT = "OPT"  # optimizer step of one stage
    SEND_F = "SEND_F"  # activation to the next stage
    RECV_F = "RECV_F"
    SEND_B = "SEND_B"  # input gradient to the previous stage
    RECV_B = "RECV_B"
    SEND_G = "SEND_G"  # a replica's accumulated weight gradient to the stage's owner (AMDP)
    RECV_G = "RECV_G"
    SEND_W = "SEND_W"  # updated weights from the owner to a replica (AMDP)
    RECV_W = "RECV_W"
    OVERLAP_F_B = "OVERLAP_F_B"  # the F and the backward right after it run overlapped (DualPipe)

    def __str__(self) -> str:
        return self.value


COMPUTE_KINDS = frozenset({Kind.F, Kind.B, Kind.I, Kind.W})
BACKWARD_KINDS = frozenset({Kind.B, Kind.I})  # the backward that frees the next stage
WEIGHT_GRAD_KINDS = frozenset({Kind.B, Kind.W})  # the backward that produces a weight gradient
SEND_KINDS = frozenset({Kind.SEND_F, Kind.SEND_B, Kind.SEND_G, Kind.SEND_W})
RECV_KINDS = frozenset({Kind.RECV_F, Kind.RECV_B, Kind.RECV_G, Kind.RECV_W})
COMM_KINDS = SEND_KINDS | RECV_KINDS
MATCHING = {
    Kind.SEND_F: Kind.RECV_F,
    Kind.SEND_B: Kind.RECV_B,
    Kind.SEND_G: Kind.RECV_G,
    Kind.SEND_W: Kind.RECV_W,
}
MATCHING.update({recv: send for send, recv in list(MATCHING.items())})


class Action(NamedTuple):
    """One thing one rank does. Immutable, hashable, ordered by field.

    version: for F/B/I/W the weight version read; for OPT the version written; for SEND_W/RECV_W the
    version carried. None until the version pass has run.
    peer: the other stage of a SEND_G/RECV_G/SEND_W/RECV_W; None elsewhere (F/B neighbours follow
    from the layout).
    """

    stage: int
    kind: Kind
    microbatch: int | None = None
    step: int = 0
    version: int | None = None
    peer: int | None = None

    def __str__(self) -> str:
        return format_action(self)

    @property
    def key(self) -> tuple[int, Kind, int | None, int, int | None]:
        """Identity of the action regardless of its version: at most one per schedule."""
        return (self.stage, self.kind, self.microbatch, self.step, self.peer)


_KIND_CODES = sorted((k.value for k in Kind), key=len, reverse=True)
_KIND_BY_CODE = {kind.value: kind for kind in Kind}
_ACTION_RE = re.compile(
    r"^(?P<stage>\d+)(?P<kind>" + "|".join(_KIND_CODES) + r")(?P<microbatch>\d*)"
    r"(?:@(?=[sv]\d)(?:s(?P<step>\d+))?(?:v(?P<version>\d+))?)?(?:>(?P<peer>\d+))?$"
)


def format_action(action: Action) -> str:
    """The text form of an action (see the module docstring)."""
    # a hot path (every recorded event of a run): the fields unpacked once, and the kind's `_value_`,
    # a plain attribute, rather than `value`, which goes through the Enum machinery on every call
    stage, kind, microbatch, step, version, peer = action
    text = f"{stage}{kind._value_}" if microbatch is None else f"{stage}{kind._value_}{microbatch}"
    if step:
        text += f"@s{step}" if version is None else f"@s{step}v{version}"
    elif version is not None:
        text += f"@v{version}"
    return text if peer is None else f"{text}>{peer}"


def parse_action(text: str) -> Action:
    """Parse the text form back into an Action; raise ScheduleError naming the text if malformed."""
    match = _ACTION_RE.match(text.strip())
    if match is None:
        raise ScheduleError(f"malformed action {text!r} (expected e.g. '0F3', '1SEND_F2', '0OPT@s1v2')")
    stage, kind, microbatch, step, version, peer = match.groups()
    # a hot path when reading large traces: plain lookups and int() rather than Enum calls
    return Action(
        int(stage),
        _KIND_BY_CODE[kind],
        int(microbatch) if microbatch else None,
        int(step) if step else 0,
        int(version) if version else None,
        int(peer) if peer else None,
    )


class Versioning(str, Enum):
    """How a schedule's stages version their weights (docs/schedules.md)."""

    FLUSH = "flush"  # one version; synchronous update after every step
    STASH = "stash"  # PipeDream: forward reads the newest, backward the stashed; update per microbatch
    DOUBLE_BUFFER = "double_buffer"  # PipeDream-2BW: step k reads W(k-1); update per step
    CURRENT = "current"  # AMDP: no stashing, forward and backward read whatever is current

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where the stages live.

    Stages are numbered pipeline by pipeline: stage = pipeline * stages_per_pipeline + depth.
    Microbatch j of a step runs through pipeline j % pipelines.
    """

    ranks: int
    """Devices (P)."""
    stages_per_pipeline: int
    """Pieces the model is cut into: P, or P * chunks for interleaved schedules."""
    pipelines: int = 1
    """Concurrent copies of the pipeline (AMDP: P / 2), each crossing all ranks."""
    placement: tuple[int, ...]
    """placement[stage] is the rank that holds the stage."""

    def __post_init__(self) -> None:
        if len(self.placement) != self.stages_per_pipeline * self.pipelines:
            raise ScheduleError(
                f"placement has {len(self.placement)} stages, expected "
                f"{self.stages_per_pipeline} x {self.pipelines} pipelines"
            )
        if any(not 0 <= rank < self.ranks for rank in self.placement):
            raise ScheduleError(f"placement {self.placement} names a rank outside 0..{self.ranks - 1}")

    @property
    def num_stages(self) -> int:
        return len(self.placement)

    def depth(self, stage: int) -> int:
        """Position of a stage inside its pipeline: 0 holds the embedding, the last one the loss."""
        return stage % self.stages_per_pipeline

    def pipeline(self, stage: int) -> int:
        return stage // self.stages_per_pipeline

    def is_first(self, stage: int) -> bool:
        return self.depth(stage) == 0

    def is_last(self, stage: int) -> bool:
        return self.depth(stage) == self.stages_per_pipeline - 1

    def next_stage(self, stage: int) -> int | None:
        return None if self.is_last(stage) else stage + 1

    def prev_stage(self, stage: int) -> int | None:
        return None if self.is_first(stage) else stage - 1

    def rank_stages(self, rank: int) -> list[int]:
        """The stages a rank holds, in stage order."""
        return [stage for stage, owner in enumerate(self.placement) if owner == rank]

    def replicas(self, stage: int) -> list[int]:
        """All stages that hold the same model piece as `stage` (one per pipeline)."""
        depth = self.depth(stage)
        return [p * self.stages_per_pipeline + depth for p in range(self.pipelines)]


def linear_layout(ranks: int, chunks: int = 1) -> Layout:
    """One pipeline; stage s on rank s % ranks (chunks > 1: the interleaved, looped placement)."""
    return Layout(
        ranks=ranks,
        stages_per_pipeline=ranks * chunks,
        placement=tuple(stage % ranks for stage in range(ranks * chunks)),
    )


def v_layout(ranks: int) -> Layout:
    """One pipeline of 2P stages in a V: rank s holds stage s and stage 2P-1-s (ZB-V, DualPipeV)."""
    stages = 2 * ranks
    return Layout(
        ranks=ranks,
        stages_per_pipeline=stages,
        placement=tuple(stage if stage < ranks else stages - 1 - stage for stage in range(stages)),
    )


def layout_shape(layout: Layout) -> str:
    """How a one-pipeline layout places its stages: 'loop' (stage s on rank s % P: one stage per rank,
    or interleaved chunks), 'v' (v_layout) or 'other' (AMDP's pipelines, a placement of a file's own).
    With one rank both loop and V put everything on it: that is reported as 'loop'."""
    if layout.pipelines == 1 and layout.num_stages % layout.ranks == 0:
        if layout == linear_layout(layout.ranks, layout.num_stages // layout.ranks):
            return "loop"
        if layout.num_stages == 2 * layout.ranks and layout == v_layout(layout.ranks):
            return "v"
    return "other"


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A complete schedule: the layout, the workload and each rank's ordered actions."""

    name: str
    """Registry name of the generator that made it (e.g. '1f1b')."""
    layout: Layout
    microbatches: int
    """Microbatches per optimizer step (m)."""
    steps: int = 1
    """Optimizer steps (minibatches) the action lists cover."""
    chunks: int = 1
    """Model chunks per rank (interleaved schedules); every stage then costs 1 / chunks."""
    versioning: Versioning = Versioning.FLUSH
    actions: tuple[tuple[Action, ...], ...]
    """actions[rank]: what the rank runs, strictly in this order."""
    csv: str | None = None
    """For a schedule read from a file: the compute-only PyTorch CSV of one step it was read from
    (schedules/imported.py), which lets a trace rebuild it; None for pipesim's own generators."""

    @property
    def ranks(self) -> int:
        return self.layout.ranks

    @property
    def num_stages(self) -> int:
        return self.layout.num_stages

    @property
    def synchronous(self) -> bool:
        return self.versioning is Versioning.FLUSH

    def all_actions(self) -> list[tuple[int, Action]]:
        """(rank, action) for every action, rank by rank."""
        return [(rank, action) for rank, actions in enumerate(self.actions) for action in actions]

    def with_actions(self, actions: list[list[Action]] | tuple[tuple[Action, ...], ...]) -> Schedule:
        """A copy with other action lists (what every pass returns)."""
        from dataclasses import replace

        return replace(self, actions=tuple(tuple(rank_actions) for rank_actions in actions))

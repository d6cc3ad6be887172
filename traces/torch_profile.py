"""Import torch.profiler Chrome traces of a torch.distributed.pipelining run as a measured pipesim trace.

    from traces.torch_profile import import_profiles
    trace = import_profiles(["rank0.json", "rank1.json"], schedule="gpipe", microbatches=4)

    pipesim import-profile rank0.json rank1.json --schedule gpipe -m 4 -o trace.json

torch.profiler writes one Chrome trace per process. The pipelining schedules mark their actions with
`record_function` spans ('Forward 3' / 'Backward 3' in ScheduleGPipe, 'PP:1F3' / 'PP:1SEND_F3' in
_PipelineScheduleRuntime and the schedules built on it) and torch.optim marks 'Optimizer.step#SGD.step'.
This module maps those spans onto the IR actions of pipesim's own schedule of the same name and size,
checks that every rank ran pipesim's compute order, and returns a Trace with source "measured". What the
spans say and what they cannot say: traces/README.md, "Importing a torch.profiler trace".

Standard library only: traces/ never imports torch.

Note: how one compute span becomes events (operators: the profiler's cpu_op events inside the span,
communication operators such as c10d::recv_ excluded):

    span 'Forward 3' on stage 1:  |-- wait for the receive --|== operators ==|-- post the send --|
    events:                        1RECV_F3                   1F3             1SEND_F3 (ScheduleGPipe only;
                                                                              the runtime has SEND spans)
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from schedules.ir import COMPUTE_KINDS, Action, Kind, Schedule, ScheduleError
from schedules.registry import build
from traces.schema import Event, ScheduleHeader, Trace, TraceError, stream_of
from traces.torch_spans import GPIPE_FAMILY, Profile, Span, read_profile

SCHEDULES = ("gpipe", "1f1b")
"""The flush schedules whose spans map one to one onto pipesim's actions."""


@dataclass(frozen=True, kw_only=True)
class Placed:
    """A span mapped onto one rank's step: the actions it stands for, with their times (microseconds)."""

    rank: int
    """The pipeline rank whose profile held the span."""
    action: Action
    """The IR action, with its step and weight version."""
    start: float
    """Microseconds on the profile's clock."""
    end: float
    """Microseconds; end >= start."""


class Split(NamedTuple):
    """A compute span cut into its receive wait, its operators and its send posting (microseconds)."""

    recv: tuple[float, float] | None
    compute: tuple[float, float]
    send: tuple[float, float] | None


def import_profiles(
    paths: list[str | os.PathLike],
    *,
    schedule: str,
    microbatches: int,
    steps: int | None = None,
    ranks: list[int] | None = None,
) -> Trace:
    """One Chrome trace per rank -> a measured Trace of pipesim's `schedule` (gpipe or 1f1b).

    ranks[i] is the pipeline rank of paths[i]; by default the profiles' own rank (distributedInfo) where
    every file has one, else the file order. steps defaults to what the spans show. Raises TraceError
    (one line) for a bad file, a span that does not parse, or an order that is not pipesim's.
    """
    if schedule not in SCHEDULES:
        raise TraceError(f"import-profile knows the schedules {', '.join(SCHEDULES)}, got {schedule!r}")
    if microbatches < 1:
        raise TraceError(f"microbatches m must be at least 1, got {microbatches}")
    if not paths:
        raise TraceError("no profile given: one Chrome trace per rank")
    profiles = [read_profile(path, microbatches=microbatches) for path in paths]
    order = _rank_order(profiles, ranks)
    by_rank = [profiles[order.index(rank)] for rank in range(len(profiles))]
    families = {profile.family for profile in by_rank}
    if len(families) > 1:
        raise TraceError(f"the profiles mix span families ({', '.join(sorted(families))}): one run, please")
    ran = _steps_run(by_rank, schedule, microbatches, steps)
    try:
        planned = build(schedule, len(by_rank), microbatches, steps=ran)
    except ScheduleError as error:
        raise TraceError(str(error)) from None
    placed = [item for rank, profile in enumerate(by_rank) for item in _place(rank, profile, planned)]
    check_order(placed, planned)
    return _trace(placed, planned, by_rank)


def _rank_order(profiles: list[Profile], ranks: list[int] | None) -> list[int]:
    """The pipeline rank of each profile, in file order."""
    count = len(profiles)
    if ranks is not None:
        if sorted(ranks) != list(range(count)):
            raise TraceError(
                f"--ranks {ranks} must name each of the ranks 0..{count - 1} once, one per profile"
            )
        return list(ranks)
    recorded = [profile.rank for profile in profiles]
    if None in recorded:
        return list(range(count))
    world = profiles[0].world_size
    if world is not None and world != count:
        raise TraceError(
            f"{count} profile(s) given, but {profiles[0].path} says the run had {world} ranks: "
            "give one profile per rank (or say which pipeline rank each is with --ranks)"
        )
    for rank, seen in Counter(recorded).items():
        if seen > 1:
            files = ", ".join(p.path for p in profiles if p.rank == rank)
            raise TraceError(f"two profiles are from rank {rank} ({files}): give one profile per rank")
    if sorted(recorded) != list(range(count)):
        raise TraceError(
            f"the profiles are from ranks {sorted(recorded)}: name their pipeline ranks with --ranks"
        )
    return [int(rank) for rank in recorded]  # type: ignore[arg-type]


def _steps_run(profiles: list[Profile], schedule: str, microbatches: int, steps: int | None) -> int:
    """How many steps the spans cover: every compute action of pipesim's one-step schedule equally often."""
    one_step = build(schedule, len(profiles), microbatches, steps=1)
    per_rank = [_rank_steps(rank, profile, one_step) for rank, profile in enumerate(profiles)]
    if len(set(per_rank)) > 1:
        raise TraceError(f"the ranks ran different numbers of steps: {per_rank}")
    if per_rank[0] == 0:
        raise TraceError("the profiles hold no forward or backward span")
    if steps is not None and steps != per_rank[0]:
        raise TraceError(f"--steps {steps}, but the profiles hold {per_rank[0]} step(s)")
    return per_rank[0]


def _rank_steps(rank: int, profile: Profile, one_step: Schedule) -> int:
    """How often the rank ran each of its compute actions (the same count for all, or a TraceError)."""
    expected = sorted(
        {(a.kind, a.microbatch) for a in one_step.actions[rank] if a.kind in COMPUTE_KINDS}, key=_order_key
    )
    counts = Counter((span.kind, span.microbatch) for span in profile.spans if span.kind in COMPUTE_KINDS)
    unexpected = sorted(counts.keys() - set(expected), key=_order_key)
    if unexpected:
        raise TraceError(
            f"rank {rank} ({profile.path}) ran {_text(rank, *unexpected[0])}, which pipesim's "
            f"{one_step.name} does not have (is --schedule right?)"
        )
    reference = expected[0]
    for key in expected:
        if counts[key] != counts[reference]:
            raise TraceError(
                f"rank {rank} ({profile.path}) ran {_text(rank, *key)} {counts[key]} time(s) but "
                f"{_text(rank, *reference)} {counts[reference]} (a profile cut mid-step?)"
            )
    return counts[reference]


def _order_key(key: tuple[Kind, int | None]) -> tuple[str, int]:
    return (key[0].value, key[1] or 0)


def _text(stage: int, kind: Kind, microbatch: int | None) -> str:
    return str(Action(stage, kind, microbatch))


def _place(rank: int, profile: Profile, planned: Schedule) -> list[Placed]:
    """The rank's spans as IR actions with steps and versions (flush: step k reads version k)."""
    layout = planned.layout
    seen: Counter[tuple[Kind, int | None]] = Counter()
    optimizer: dict[int, tuple[float, float]] = {}
    placed: list[Placed] = []
    step = -1  # the step of the latest forward or backward, which an optimizer span closes
    for span in profile.spans:
        stage = rank if span.stage is None else span.stage
        if stage >= layout.num_stages or layout.placement[stage] != rank:
            raise TraceError(
                f"{profile.path} (rank {rank}) has the span {span.name!r} of stage {stage}, which pipesim "
                f"places on another rank (profiles in the wrong order? name their ranks with --ranks)"
            )
        if span.kind is Kind.OPT:
            if step >= 0:
                begin, end = optimizer.get(step, (span.start, span.end))
                optimizer[step] = (min(begin, span.start), max(end, span.end))
            continue
        step = seen[(span.kind, span.microbatch)]
        seen[(span.kind, span.microbatch)] += 1
        placed += _span_actions(rank, stage, step, span, profile, planned)
    for opt_step, (begin, end) in optimizer.items():
        placed.append(
            Placed(
                rank=rank, action=Action(rank, Kind.OPT, None, opt_step, opt_step + 1), start=begin, end=end
            )
        )
    return placed


def _span_actions(
    rank: int, stage: int, step: int, span: Span, profile: Profile, planned: Schedule
) -> list[Placed]:
    """One span -> its action, plus the receive wait and the send posting that it encloses."""
    kind, microbatch = span.kind, span.microbatch

    def placed(kind: Kind, interval: tuple[float, float], version: int | None = None) -> Placed:
        action = Action(stage, kind, microbatch, step, version)
        return Placed(rank=rank, action=action, start=interval[0], end=interval[1])

    if kind not in COMPUTE_KINDS:  # a runtime SEND span: the posting itself (RECV spans were dropped)
        return [placed(kind, (span.start, span.end))]
    split = _split(span, planned, stage, within_span_sends=profile.family == GPIPE_FAMILY)
    forward = kind is Kind.F
    actions = [placed(kind, split.compute, version=step)]  # flush: step k reads version k
    if split.recv is not None:
        actions.append(placed(Kind.RECV_F if forward else Kind.RECV_B, split.recv))
    if split.send is not None:
        actions.append(placed(Kind.SEND_F if forward else Kind.SEND_B, split.send))
    return actions


def _split(span: Span, planned: Schedule, stage: int, *, within_span_sends: bool) -> Split:
    """Cut a compute span at its first and last enclosed operator (the whole span if it encloses none)."""
    if span.ops is None:
        return Split(recv=None, compute=(span.start, span.end), send=None)
    layout = planned.layout
    forward = span.kind is Kind.F
    source = layout.prev_stage(stage) if forward else layout.next_stage(stage)
    target = layout.next_stage(stage) if forward else layout.prev_stage(stage)

    def remote(other: int | None) -> bool:
        return (
            span.kind is not Kind.W
            and other is not None
            and layout.placement[other] != layout.placement[stage]
        )

    first, last = span.ops
    return Split(
        recv=(span.start, first) if remote(source) else None,
        compute=(first, last),
        send=(last, span.end) if remote(target) and within_span_sends else None,
    )


def check_order(placed: list[Placed], planned: Schedule) -> None:
    """Every rank's forwards and backwards in pipesim's order, or a TraceError naming the first difference."""
    for rank, actions in enumerate(planned.actions):
        want = [a for a in actions if a.kind in COMPUTE_KINDS]
        ran = sorted(
            (p for p in placed if p.rank == rank and p.action.kind in COMPUTE_KINDS), key=lambda p: p.start
        )
        for index, (mine, theirs) in enumerate(zip((p.action for p in ran), want, strict=False)):
            if mine.key != theirs.key:
                raise TraceError(
                    f"rank {rank} ran {_unversioned(mine)} as its compute action {index}, where pipesim's "
                    f"{planned.name} runs {_unversioned(theirs)} (is --schedule or -m right?)"
                )
        if len(ran) != len(want):
            raise TraceError(
                f"rank {rank} ran {len(ran)} compute actions, pipesim's {planned.name} has {len(want)}"
            )


def _unversioned(action: Action) -> Action:
    return action._replace(version=None)


def _trace(placed: list[Placed], planned: Schedule, profiles: list[Profile]) -> Trace:
    """Seconds from the earliest span, sorted by (start, rank, position in pipesim's action list)."""
    origin = min(profile.origin for profile in profiles)
    position = [{a.key: index for index, a in enumerate(actions)} for actions in planned.actions]
    rows = []
    for item in placed:
        index = position[item.rank].get(item.action.key)
        if index is None:
            raise TraceError(
                f"rank {item.rank} ran {item.action}, which pipesim's {planned.name} does not have"
            )
        start, end = _seconds(item.start, origin), _seconds(item.end, origin)
        event = Event(
            rank=item.rank,
            action=item.action,
            start=start,
            end=max(start, end),
            stream=stream_of(item.action),
        )
        rows.append((start, item.rank, index, event))
    rows.sort(key=lambda row: row[:3])
    return Trace(
        source="measured",
        schedule=ScheduleHeader.of(planned),
        events=tuple(row[3] for row in rows),
        meta=_meta(profiles, origin, placed),
    )


def _seconds(microseconds: float, origin: float) -> float:
    return round((microseconds - origin) / 1e6, 9)


def _meta(profiles: list[Profile], origin: float, placed: list[Placed]) -> dict:
    hosts = sorted({p.host for p in profiles if p.host})
    has_opt = any(p.action.kind is Kind.OPT for p in placed)
    meta = {
        "importer": "traces.torch_profile (pipesim import-profile)",
        "profiles": [
            {
                "file": p.path,
                "rank": rank,
                "recorded_rank": p.rank,
                "host": p.host,
                "spans": len(p.spans),
                "left_out": p.left_out,
            }
            for rank, p in enumerate(profiles)
        ],
        "spans": profiles[0].family,
        "backend": profiles[0].backend,
        "clock": "torch.profiler timestamps (microseconds on each host's clock), shifted so that the "
        "earliest span starts at 0",
        "clock_origin_us": origin,
        "compute": "from the first to the last operator a span encloses (communication operators "
        "excluded); before it the receive wait, after it the send posting",
        "optimizer": "torch.optim spans 'Optimizer.step#...' (OPT events)"
        if has_opt
        else "no optimizer span in the profiles: no OPT events",
        "not_recorded": {
            "memory": "the spans carry no memory; events say null",
            "bytes": "the spans carry no message sizes; events say 0",
            "receive posting": "a receive is the wait inside its consumer's span; the runtime's separate "
            "posting spans (PP:<s>RECV_F<j>) are left out",
        },
    }
    if len(hosts) > 1:
        meta["clock_warning"] = (
            f"profiles from several hosts ({', '.join(hosts)}): their clocks are not aligned"
        )
    return meta

"""Fit what each action costs from a measured trace: compute per stage, the host's time around each action,
and the time a message takes. The simulator turns the fit into a cost file (simulator/calibration.py).

    from traces.calibrate import calibrate
    fit = calibrate(read_trace("runs/a/trace.json"))
    fit.stages[0].times["forward"].seconds        # robust mean of stage 0's forwards, warm-up dropped
    fit.link.latency.seconds, fit.notes

Note: the model the fit is for (what simulator/engine.py does with a StageCost's host_* times).

    rank's clock:  ..prev ends | host time | action (compute runs; a send starts its transfer; a
                                            receive waits until its message arrives) | next ...

    F, B, I, W, OPT   duration            the events' durations
    host_<kind>       the gap before it   start - end of the rank's previous event
    a send            host_send           its gap plus its own (posting) duration: the rank is busy
    a message         latency             from its send's start to the end of a receive that waited
                                          for it (the receive's unpacking included)
    a receive         host_recv           its gap (every receive's) plus its unpacking: the mean duration
                                          of the receives whose message was already there

A real runtime spends its time between actions (interpreting, posting sends and receives, recording the
trace; with gradient clipping, the global-norm all-reduce just before the first update of a step): the
host times keep it idle in the prediction, as it is in the measurement.

What is averaged how: the first step is dropped when there are at least three (allocation and lazy
initialisation make it slow). Compute and message times are plain means over the rest, with their
spread kept as quantiles of value / mean (`compute_factors`, `link.factors`): the simulator draws from
them (an empirical jitter), because on a real machine the occasional slow action or late message is part
of the cost, and a pipeline waits on the slowest of its paths, so the mean alone predicts it too fast. A
receive's unpacking needs enough receives that found their message there: in 1F1B almost every receive of
the first stage waits, and 2 that started just before a slow message arrived once made the whole estimate
(2.4 ms, which a GPipe what-if then spent 8 times a step: 15% too slow); a stage with fewer than
MIN_UNPACKS of them takes the mean over every stage's. Host times are plain means over the steps without
validation or checkpoints (traces.pauses: that work is outside the schedule, and the simulator does not
model it). The occasional long pause elsewhere (the garbage collector, the OS scheduling another process)
is part of the run's cost and stays: dropping such pauses as outliers predicted measured CPU runs 3-5% too
fast. Only when every step holds validation or a checkpoint are host times robust means, values beyond 3
interquartile ranges of the quartiles dropped.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from schedules.ir import RECV_KINDS, SEND_KINDS, Kind, Layout
from schedules.semantics import message
from traces.pauses import paused_steps
from traces.schema import Event, ScheduleHeader, Trace, TraceError

OUTLIER_IQRS = 3.0
"""Host times beyond this many interquartile ranges outside the quartiles are dropped."""
QUANTILES = 32
"""How many quantiles of value / mean describe the spread of compute and message times."""
WARMUP_STEPS = 1
"""Leading steps dropped when the trace has at least WARMUP_STEPS + 2 steps."""
MIN_UNPACKS = 8
"""Receives whose message was already there that a stage needs for its own unpacking time (else the
mean over every stage's)."""

COMPUTE_FIELDS = {Kind.F: "forward", Kind.B: "backward", Kind.I: "input_grad", Kind.W: "backward_weight"}
TIMED_FIELDS = frozenset({*COMPUTE_FIELDS.values(), "optimizer_step"})
"""Fields that are the actions' own durations (plain means, spread kept); the rest are host times."""
WARMUP_OF_FIELD = {
    "forward": "warmup_forward",
    "backward": "warmup_backward",
    "input_grad": "warmup_backward",
    "backward_weight": "warmup_backward",
    "optimizer_step": "warmup_optimizer_step",
}
"""Where the first step's excess over the mean goes (StageCost.warmup_*)."""
HOST_FIELDS = {
    Kind.F: "host_forward",
    Kind.B: "host_backward",
    Kind.I: "host_backward",
    Kind.W: "host_backward",
    Kind.OPT: "host_optimizer_step",
    **{kind: "host_send" for kind in SEND_KINDS},
    **{kind: "host_recv" for kind in RECV_KINDS},
}


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A robust mean: the mean of a sample after dropping its outliers."""

    seconds: float
    """The estimate (seconds)."""
    kept: int
    """Values used."""
    dropped: int
    """Outliers dropped (beyond OUTLIER_IQRS interquartile ranges)."""
    spread: float
    """Relative standard deviation of the values kept (0 for a single value)."""

    def describe(self) -> str:
        dropped = f", {self.dropped} outliers dropped" if self.dropped else ""
        return f"mean of {self.kept}{dropped}, relative spread {self.spread:.1%}"


@dataclass(frozen=True, kw_only=True)
class StageFit:
    """The fitted times of one cost-model stage (the model piece a cost entry describes)."""

    entry: int
    """Cost-model stage: a model piece (interleaved: a rank's share of v consecutive virtual stages)."""
    times: dict[str, Estimate] = field(default_factory=dict)
    """StageCost field name -> estimate, for what the trace shows (forward, backward, backward_weight,
    optimizer_step and the host_* times). Compute times are per whole entry (x chunks)."""


@dataclass(frozen=True, kw_only=True)
class LinkFit:
    """The time a point-to-point message takes: latency + bytes / bandwidth."""

    latency: Estimate | None
    """Seconds per message besides its bytes (None: no receive ever waited, nothing to fit)."""
    bandwidth: float
    """Bytes per second; inf when the trace cannot tell (one message size: `latency` is then the whole
    time of a message of that size)."""
    sizes: tuple[int, ...]
    """The distinct message sizes seen, in bytes."""
    factors: tuple[float, ...] = ()
    """Quantiles of message time / fitted time (the spread of message times); empty when unseen."""
    note: str
    """How the numbers were fitted, in words (written into the cost file)."""


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """What a measured trace says the actions of its run cost."""

    schedule: ScheduleHeader
    """The schedule of the trace (the fit applies to its stages and hardware)."""
    source: str
    """The trace's source ('measured' or 'simulated')."""
    entries: int
    """Cost-model stages (stages_per_pipeline / chunks)."""
    stages: tuple[StageFit, ...]
    link: LinkFit
    compute_factors: tuple[float, ...]
    """Quantiles of compute time / its stage and kind's mean, over every compute action fitted."""
    steps_used: tuple[int, ...]
    """The steps whose events were fitted."""
    notes: tuple[str, ...]
    """Warnings and choices, one line each (warm-up dropped, outliers, work outside the schedule)."""
    workload: dict[str, Any] = field(default_factory=dict)
    """The trace's meta['workload'] (samples per microbatch, tokens per sample)."""

    def to_dict(self) -> dict[str, Any]:
        def estimate(value: Estimate | None) -> dict[str, Any] | None:
            return None if value is None else vars(value)

        return {
            "schedule": self.schedule.name,
            "ranks": self.schedule.ranks,
            "entries": self.entries,
            "stages": [
                {"entry": s.entry, **{name: estimate(e) for name, e in sorted(s.times.items())}}
                for s in self.stages
            ],
            "link": {
                "latency": estimate(self.link.latency),
                "bandwidth": None if math.isinf(self.link.bandwidth) else self.link.bandwidth,
                "sizes": list(self.link.sizes),
                "factors": list(self.link.factors),
                "note": self.link.note,
            },
            "compute_factors": list(self.compute_factors),
            "steps_used": list(self.steps_used),
            "notes": list(self.notes),
        }


def robust_mean(values: list[float], *, trim: bool = True) -> Estimate | None:
    """Mean after dropping values beyond OUTLIER_IQRS interquartile ranges of the quartiles (trim), or
    of all values."""
    if not values:
        return None
    kept = values
    if trim and len(values) >= 4:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        low, high = q1 - OUTLIER_IQRS * (q3 - q1), q3 + OUTLIER_IQRS * (q3 - q1)
        kept = [value for value in values if low <= value <= high] or values
    mean = math.fsum(kept) / len(kept)
    spread = statistics.pstdev(kept) / mean if len(kept) > 1 and mean > 0 else 0.0
    return Estimate(seconds=mean, kept=len(kept), dropped=len(values) - len(kept), spread=spread)


def calibrate(trace: Trace) -> Calibration:
    """Fit per-stage compute and host times and the link from a trace (see the module docstring)."""
    if not trace.events:
        raise TraceError("the trace has no events: nothing to calibrate")
    header = trace.schedule
    steps_used = _steps_used(header.steps)
    paused = paused_steps(trace) or frozenset()
    quiet = [step for step in steps_used if step not in paused]
    # single process: the ranks took turns, so one rank's gaps hold the others' work, not host time
    turns = trace.meta.get("backend") == "local"
    host_steps = [] if turns else quiet or steps_used
    # every step paused: drop the long pauses as outliers instead
    samples = _Samples(
        header, serial_sends=trace.source == "measured", host_steps=host_steps, trim_host=not quiet
    )
    for rank_events in _per_rank(trace):
        samples.add_rank(rank_events, steps_used)
    link = samples.fit_link()
    samples.add_receives(link.latency.seconds if link.latency else 0.0)
    notes = list(samples.notes)
    if header.steps > len(steps_used):
        notes.insert(0, f"dropped step 0 of {header.steps} (warm-up: allocation and lazy initialisation)")
    else:
        notes.insert(0, f"only {header.steps} step(s): warm-up kept (run 3 or more steps to drop it)")
    if turns:
        notes.append(
            "a single-process run: its ranks took turns on one device, so the gaps between a rank's "
            "actions hold the other ranks' work; compute times fitted, host times left at 0"
        )
    elif paused and quiet:
        notes.append(
            f"host times from {len(quiet)} of {len(steps_used)} steps: steps with validation or a "
            "checkpoint, and the step after each, left out (work outside the schedule)"
        )
    shared = _shared_cpus_note(trace)
    if shared:
        notes.append(shared)
    stages = tuple(samples.fit_stage(entry) for entry in range(samples.entries))
    notes += _outlier_notes(stages) + samples.unpacking_notes()
    compute_factors = samples.compute_factors()
    return Calibration(
        schedule=header,
        source=trace.source,
        entries=samples.entries,
        stages=stages,
        link=link,
        compute_factors=compute_factors,
        steps_used=tuple(steps_used),
        notes=tuple(notes),
        workload=dict(trace.meta.get("workload") or {}),
    )


def factors(ratios: list[float], count: int = QUANTILES) -> tuple[float, ...]:
    """The spread of value / mean as `count` quantiles, scaled to average exactly 1 (so drawing them
    keeps the mean); () for an empty sample."""
    points = quantiles(ratios, count)
    mean = math.fsum(points) / len(points) if points else 0.0
    return tuple(point / mean for point in points) if mean > 0 else ()


def quantiles(values: list[float], count: int = QUANTILES) -> tuple[float, ...]:
    """`count` values at probabilities (i + 1/2) / count of the sample (linear between order statistics);
    () for an empty sample."""
    if not values:
        return ()
    ordered = sorted(values)
    out = []
    for i in range(count):
        position = (i + 0.5) / count * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return tuple(out)


def _steps_used(steps: int) -> list[int]:
    first = WARMUP_STEPS if steps >= WARMUP_STEPS + 2 else 0
    return list(range(first, steps))


def _per_rank(trace: Trace) -> list[list[Event]]:
    """Each rank's events in the order they started (the trace order: by start, then position)."""
    ranks: list[list[Event]] = [[] for _ in range(trace.schedule.ranks)]
    for event in trace.events:
        ranks[event.rank].append(event)
    return ranks


class _Samples:
    """The durations, gaps and message times of one trace, grouped by cost entry and field."""

    def __init__(
        self, header: ScheduleHeader, *, serial_sends: bool, host_steps: list[int], trim_host: bool
    ) -> None:
        self.layout: Layout = header.layout
        self.host_steps = frozenset(host_steps)
        """The steps whose gaps between actions are fitted as host times."""
        self.trim_host = trim_host
        """Drop outliers from host times: when no step is free of validation and checkpoints."""
        self.chunks = header.chunks
        self.entries = self.layout.stages_per_pipeline // header.chunks
        self.serial_sends = serial_sends
        self.values: dict[tuple[int, str], list[float]] = defaultdict(list)
        self.sends: dict[tuple, Event] = {}
        self.receives: list[tuple[Event, float]] = []  # (event, gap before it)
        self.unpacks: dict[int, list[float]] = defaultdict(list)  # receives that found their message
        self.warmup: dict[tuple[int, str], list[float]] = defaultdict(list)  # the dropped steps' times
        self.notes: list[str] = []

    def entry(self, stage: int) -> int:
        return self.layout.depth(stage) // self.chunks

    def add_rank(self, events: list[Event], steps_used: list[int]) -> None:
        """Durations of compute, gaps before every action, and the sends and receives for the link."""
        used = set(steps_used)
        previous_end: float | None = None
        for event in events:
            action = event.action
            if action.kind is Kind.OVERLAP_F_B:
                continue  # a pair's marker: its moment counts as host time before the pair's forward
            gap = None if previous_end is None else max(0.0, event.start - previous_end)
            if action.kind in SEND_KINDS:
                self.sends[message(self.layout, action)] = event
            if action.step in used:
                self._add(event, gap)
            elif event.stream == "compute":
                self.warmup[(self.entry(action.stage), _time_field(action.kind))].append(
                    event.duration * self.chunks
                )
            # the rank is free again when the action ends; after a send on its own stream, when the
            # send was posted (its start, unless its link was busy)
            done = event.end if self.serial_sends or action.kind not in SEND_KINDS else event.start
            previous_end = done if previous_end is None else max(previous_end, done)

    def _add(self, event: Event, gap: float | None) -> None:
        action, entry = event.action, self.entry(event.action.stage)
        if event.stream == "compute":
            self.values[(entry, _time_field(action.kind))].append(event.duration * self.chunks)
        if action.kind in RECV_KINDS:
            self.receives.append((event, gap or 0.0))
            return
        if gap is None or action.step not in self.host_steps:
            return
        own = event.duration if action.kind in SEND_KINDS and self.serial_sends else 0.0
        self.values[(entry, HOST_FIELDS[action.kind])].append(gap + own)

    def compute_factors(self) -> tuple[float, ...]:
        """Quantiles of each compute time over its entry and field's mean."""
        ratios = []
        for (_, name), values in self.values.items():
            mean = math.fsum(values) / len(values)
            if name in TIMED_FIELDS and mean > 0:
                ratios += [value / mean for value in values]
        return factors(ratios)

    def fit_link(self) -> LinkFit:
        """Message time from the receives that were waiting when their send started."""
        waited: dict[int, list[float]] = defaultdict(list)
        for event, _ in self.receives:
            send = self.sends.get(message(self.layout, event.action))
            if send is None:
                raise TraceError(f"rank {event.rank}: {event.action} has no matching send in the trace")
            if event.start <= send.start and event.end >= send.start:
                waited[event.bytes].append(event.end - send.start)
        sizes = tuple(sorted({event.bytes for event, _ in self.receives}))
        return _link_fit(waited, sizes)

    def add_receives(self, latency: float) -> None:
        """host_recv: the gap before every receive (its unpacking comes in fit_stage), and the durations
        of the receives whose message had already arrived (their unpacking)."""
        for event, gap in self.receives:
            if event.action.step not in self.host_steps:
                continue
            entry = self.entry(event.action.stage)
            self.values[(entry, "host_recv")].append(gap)
            send = self.sends[message(self.layout, event.action)]
            if event.start >= send.start + latency:
                self.unpacks[entry].append(event.duration)

    def unpacking_notes(self) -> list[str]:
        """Which stages' receives rarely found their message there (their unpacking is everyone's)."""
        few = [
            entry
            for entry in range(self.entries)
            if (entry, "host_recv") in self.values and len(self.unpacks.get(entry, [])) < MIN_UNPACKS
        ]
        if not few:
            return []
        unpack, count = self.unpacking(few[0])
        shown = ", ".join(f"{entry} ({len(self.unpacks.get(entry, []))})" for entry in few)
        return [
            f"stage(s) {shown}: fewer than {MIN_UNPACKS} receives found their message already there, so "
            f"their host_recv takes the mean unpacking over all stages ({unpack * 1e6:.0f} us, of {count})"
        ]

    def unpacking(self, entry: int) -> tuple[float, int]:
        """(mean seconds, receives it is the mean of) of a receive's own time when its message was there:
        the entry's own receives, or every entry's when it has fewer than MIN_UNPACKS."""
        own = self.unpacks.get(entry, [])
        values = own if len(own) >= MIN_UNPACKS else [t for ts in self.unpacks.values() for t in ts]
        return (statistics.fmean(values), len(values)) if values else (0.0, 0)

    def fit_stage(self, entry: int) -> StageFit:
        times = {
            name: estimate
            for (index, name), values in sorted(self.values.items())
            if index == entry
            and (estimate := robust_mean(values, trim=self.trim_host and name not in TIMED_FIELDS))
        }
        times.update(self._warmup(entry, times))
        if "host_recv" in times:
            unpack, _ = self.unpacking(entry)
            times["host_recv"] = replace(times["host_recv"], seconds=times["host_recv"].seconds + unpack)
        input_grad = times.pop("input_grad", None)
        if input_grad is not None and "backward_weight" in times and "backward" not in times:
            weight = times["backward_weight"]
            times["backward"] = Estimate(
                seconds=input_grad.seconds + weight.seconds,
                kept=min(input_grad.kept, weight.kept),
                dropped=input_grad.dropped + weight.dropped,
                spread=max(input_grad.spread, weight.spread),
            )
        return StageFit(entry=entry, times=times)

    def _warmup(self, entry: int, times: dict[str, Estimate]) -> dict[str, Estimate]:
        """warmup_*: how much longer the dropped first step's actions took than the means, in all."""
        excess: dict[str, list[float]] = defaultdict(list)
        for (index, name), values in self.warmup.items():
            if index == entry and name in times:
                target = WARMUP_OF_FIELD[name]
                excess[target] += [value - times[name].seconds for value in values]
        return {
            name: Estimate(seconds=max(0.0, math.fsum(values)), kept=len(values), dropped=0, spread=0.0)
            for name, values in excess.items()
        }


def _time_field(kind: Kind) -> str:
    return "optimizer_step" if kind is Kind.OPT else COMPUTE_FIELDS[kind]


def _link_fit(waited: dict[int, list[float]], sizes: tuple[int, ...]) -> LinkFit:
    """Mean message time per size; a line through them when there are several sizes."""
    everything = [t for times in waited.values() for t in times]
    pooled = robust_mean(everything, trim=False)
    if pooled is None:
        note = "no receive waited for its message: the message time cannot be seen (latency 0)"
        return LinkFit(latency=None, bandwidth=math.inf, sizes=sizes, note=note)
    means = {size: math.fsum(times) / len(times) for size, times in waited.items()}
    if len(means) >= 2:
        slope, intercept = _line(means)
        if slope > 0 and intercept >= 0:
            nominal = {size: intercept + slope * size for size in means}
            spread = factors([t / nominal[size] for size, times in waited.items() for t in times])
            return LinkFit(
                latency=replace(pooled, seconds=intercept),
                bandwidth=1 / slope,
                sizes=sizes,
                factors=spread,
                note=f"least squares over {len(means)} message sizes: time = latency + bytes / bandwidth",
            )
    shown = ", ".join(f"{size} B" for size in sorted(waited))
    why = "one message size" if len(waited) == 1 else "the sizes do not fit a line"
    note = (
        f"{why} ({shown}): bandwidth not identifiable, the latency is the whole per-message time "
        "(send start to the end of a receive that waited for it)"
    )
    spread = factors([t / pooled.seconds for t in everything]) if pooled.seconds > 0 else ()
    return LinkFit(latency=pooled, bandwidth=math.inf, sizes=sizes, factors=spread, note=note)


def _line(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares slope and intercept of time against bytes."""
    xs, ys = list(points), list(points.values())
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0, mean_y
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    return slope, mean_y - slope * mean_x


def shared_cpus(trace: Trace, ranks: int | None = None) -> tuple[int, int, int] | None:
    """(ranks, threads, cpus) when `ranks` ranks (default: the run's) of the run's threads each want
    more CPUs than the run's machine had (meta.cpus, from `pipesim run` on a CPU); None otherwise."""
    cpus, config = trace.meta.get("cpus"), trace.meta.get("config")
    threads = config.get("threads", 1) if isinstance(config, dict) else 1
    ranks = trace.schedule.ranks if ranks is None else ranks
    if not isinstance(cpus, int) or not isinstance(threads, int) or ranks * threads <= cpus:
        return None
    return ranks, threads, cpus


def _shared_cpus_note(trace: Trace) -> str | None:
    """A note when the run's ranks wanted more CPUs than their machine had (its times include waiting
    for a CPU, and the fit keeps it), or had enough but were not pinned to them."""
    found = shared_cpus(trace)
    if found is None:
        if trace.meta.get("pinned") is False and isinstance(trace.meta.get("cpus"), int):
            return (
                "the run's ranks were not pinned (pipesim run --no-pin): their threads shared the CPUs "
                "as the OS placed them, which changes with the schedule, so predictions of other "
                "schedules carry it less well than from a pinned run"
            )
        return None
    ranks, threads, cpus = found
    return (
        f"the run's {ranks} ranks x {threads} thread(s) shared {cpus} CPUs: the fitted times include waiting "
        "for a CPU, which holds for this machine and this P only"
    )


def _outlier_notes(stages: tuple[StageFit, ...]) -> list[str]:
    dropped = sum(e.dropped for s in stages for name, e in s.times.items() if name.startswith("host_"))
    notes = []
    if dropped:
        notes.append(
            f"{dropped} long pauses between actions dropped as outliers (validation, checkpoints or "
            "other work outside the schedule, which the simulator does not model)"
        )
    return notes

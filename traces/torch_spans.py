"""Read one torch.profiler Chrome trace: the pipelining and optimizer spans it holds.

    from traces.torch_spans import read_profile
    profile = read_profile("rank0.json", microbatches=4)
    [(span.name, span.start, span.end) for span in profile.spans]

The span names come from PyTorch's source (torch/distributed/pipelining/schedules.py, torch/optim):

    'Forward 3', 'Backward 3'              ScheduleGPipe: microbatch 3 of the rank's one stage
    'PP:1F3', 'PP:1SEND_F3', 'PP:0B2'      _PipelineScheduleRuntime: one span per action of its schedule
    'Optimizer.step#SGD.step'              torch.optim: one span per optimizer step

Each span also records the extent of the operators it encloses (the profiler's cpu_op events on the same
thread, communication operators excluded), which tells the compute from the waiting around it. Standard
library only; traces/torch_profile.py maps the spans onto pipesim's actions.
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from schedules.ir import Kind
from traces.schema import TraceError

GPIPE_FAMILY = "ScheduleGPipe spans ('Forward j', 'Backward j')"
RUNTIME_FAMILY = "_PipelineScheduleRuntime spans ('PP:<action>')"
SPAN_CATEGORIES = ("user_annotation", None)
"""record_function spans on the CPU timeline; 'gpu_user_annotation' copies on GPU streams are skipped."""

_PLAIN = re.compile(r"^(Forward|Backward) (\d+)$")
_RUNTIME_ACTION = re.compile(r"^(\d+)(SEND_F|RECV_F|SEND_B|RECV_B|F|B|I|W)(\d+)$")
_RUNTIME_LEFT_OUT = re.compile(r"^\d+(UNSHARD|RESHARD|REDUCE_GRAD)$")
_OPTIMIZER = re.compile(r"^Optimizer\.step#.+\.step$")
_GZIP_MAGIC = b"\x1f\x8b"
_COMM_OPS = ("c10d::", "record_param_comms", "gloo:", "nccl:")
_NO_SPANS = (
    "no torch.distributed.pipelining spans (ScheduleGPipe records 'Forward j'/'Backward j', "
    "_PipelineScheduleRuntime and its subclasses 'PP:<action>'; Schedule1F1B records none: run its "
    "order through _PipelineScheduleRuntime, see traces/README.md)"
)


@dataclass(frozen=True, kw_only=True)
class Span:
    """One pipelining or optimizer span of a profile."""

    name: str
    """The span's name as recorded, e.g. 'Forward 3' or 'PP:1SEND_F3'."""
    kind: Kind
    """F, B, I, W, SEND_F, SEND_B (runtime only) or OPT."""
    stage: int | None
    """The stage the runtime's span names; None for ScheduleGPipe's and the optimizer's spans."""
    microbatch: int | None
    """None for OPT."""
    start: float
    """Microseconds on the profile's clock."""
    end: float
    """Microseconds; end >= start."""
    ops: tuple[float, float] | None
    """(start of the first, end of the last) operator the span encloses, microseconds; None if none."""


@dataclass(frozen=True, kw_only=True)
class Profile:
    """What one rank's Chrome trace says about its pipelining run."""

    path: str
    rank: int | None
    """distributedInfo.rank, if the trace records it."""
    world_size: int | None
    """distributedInfo.world_size, if recorded."""
    backend: str | None
    """distributedInfo.backend ('gloo', 'nccl'), if recorded."""
    host: str | None
    """host_name, if recorded."""
    family: str
    """Which schedule family's span names it holds (GPIPE_FAMILY or RUNTIME_FAMILY)."""
    spans: tuple[Span, ...]
    """In start order."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Pipelining spans without a pipesim action (receive postings, UNSHARD, ...): how many of each."""

    @property
    def origin(self) -> float:
        """Start of the earliest span, microseconds."""
        return self.spans[0].start


class _Name(NamedTuple):
    """A parsed span name: its family (None for the optimizer's), and its action (kind None: none)."""

    family: str | None
    kind: Kind | None
    stage: int | None
    microbatch: int | None


class _Found(NamedTuple):
    """A span with a pipesim action, as found in the file (internal)."""

    where: tuple[Any, Any]
    """(pid, tid)"""
    name: str
    parsed: _Name
    start: float
    end: float


@dataclass
class _Scan:
    """What one pass over a file's events collects (internal)."""

    operators: dict[tuple[Any, Any], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """(pid, tid) -> (start, end) of its non-communication operators, in start order once sorted."""
    found: list[_Found] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)


def read_profile(path: str | os.PathLike, *, microbatches: int) -> Profile:
    """Load one rank's Chrome trace; raise TraceError with one line naming the file and the problem."""
    data = _load(path)
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise TraceError(f"{path}: not a Chrome trace (no traceEvents list)")
    scan = _scan(path, events, microbatches)
    family, thread = _family_and_thread(path, scan.found)
    spans = sorted(
        (_span(found, scan.operators.get(thread, [])) for found in scan.found if found.where == thread),
        key=lambda span: (span.start, span.end),
    )
    header = data if isinstance(data, dict) else {}
    info = header.get("distributedInfo") if isinstance(header.get("distributedInfo"), dict) else {}
    return Profile(
        path=str(path),
        rank=_int_or_none(info.get("rank")),
        world_size=_int_or_none(info.get("world_size")),
        backend=_str_or_none(info.get("backend")),
        host=_str_or_none(header.get("host_name")),
        family=family,
        spans=tuple(spans),
        left_out=dict(sorted(scan.left_out.items())),
    )


def _scan(path: str | os.PathLike, events: list, microbatches: int) -> _Scan:
    """One pass: the operators per thread, the spans with a pipesim action, the others counted."""
    scan = _Scan()
    for raw in events:
        if not isinstance(raw, dict) or raw.get("ph") != "X" or not isinstance(raw.get("name"), str):
            continue
        where, name, timed = (raw.get("pid"), raw.get("tid")), raw["name"], _interval(raw)
        if raw.get("cat") == "cpu_op":
            if timed is not None and not name.startswith(_COMM_OPS):
                scan.operators[where].append(timed)
            continue
        parsed = _parse_name(path, name, microbatches) if raw.get("cat") in SPAN_CATEGORIES else None
        if parsed is None:
            continue
        if parsed.kind is None:
            scan.left_out[_left_out_label(name)] += 1
        elif timed is None:
            raise TraceError(f"{path}: span {name!r} has no numeric ts and dur")
        else:
            scan.found.append(_Found(where, name, parsed, *timed))
    for operators in scan.operators.values():
        operators.sort()
    return scan


def _interval(raw: dict) -> tuple[float, float] | None:
    """(ts, ts + dur) of a complete event, or None if it has no numeric ts or no dur >= 0."""
    ts, dur = raw.get("ts"), raw.get("dur")
    if not (_is_number(ts) and _is_number(dur) and dur >= 0):
        return None
    return float(ts), float(ts) + float(dur)


def _load(path: str | os.PathLike) -> Any:
    """The JSON of a Chrome trace, plain or gzipped (torch's tensorboard handler writes .json.gz)."""
    try:
        raw = Path(path).read_bytes()
        if raw.startswith(_GZIP_MAGIC):
            raw = gzip.decompress(raw)
    except OSError as error:  # gzip.BadGzipFile too: a damaged .gz
        raise TraceError(f"{path}: cannot read profile ({error.strerror or error})") from None
    except EOFError:
        raise TraceError(f"{path}: cannot read profile (a truncated gzip file)") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise TraceError(f"{path}: not JSON (line {error.lineno}: {error.msg})") from None


def _parse_name(path: str | os.PathLike, name: str, microbatches: int) -> _Name | None:
    """None: not a pipelining or optimizer span; kind None: a pipelining span without a pipesim action."""
    if _OPTIMIZER.match(name):
        return _Name(None, Kind.OPT, None, None)
    plain = _PLAIN.match(name)
    if plain:
        kind, microbatch, stage = Kind.F if plain[1] == "Forward" else Kind.B, int(plain[2]), None
        family = GPIPE_FAMILY
    elif name.startswith("PP:"):
        text = name[3:]
        if _RUNTIME_LEFT_OUT.match(text):
            return _Name(RUNTIME_FAMILY, None, None, None)
        action = _RUNTIME_ACTION.match(text)
        if action is None:
            raise TraceError(
                f"{path}: span {name!r} does not parse (expected PP:<stage><kind><microbatch> with kind "
                "F, B, I, W, SEND_F, RECV_F, SEND_B or RECV_B, e.g. 'PP:1F3')"
            )
        stage, kind, microbatch, family = int(action[1]), Kind(action[2]), int(action[3]), RUNTIME_FAMILY
        if kind in (Kind.RECV_F, Kind.RECV_B):  # a posting; the wait shows inside the consumer's span
            return _Name(family, None, None, None)
    else:
        return None
    if microbatch >= microbatches:
        raise TraceError(f"{path}: span {name!r} names microbatch {microbatch}, but -m is {microbatches}")
    return _Name(family, kind, stage, microbatch)


def _left_out_label(name: str) -> str:
    """'PP:1RECV_F3' -> 'PP:RECV_F' (so the counts say what kind of span was left out)."""
    return "PP:" + re.sub(r"^\d+|\d+$", "", name[3:])


def _family_and_thread(path: str | os.PathLike, found: list[_Found]) -> tuple[str, tuple[Any, Any]]:
    """The one span family of the file and the one thread that ran the schedule."""
    pipelining = [(f.where, f.name, f.parsed) for f in found if f.parsed.family]
    if not pipelining:
        raise TraceError(f"{path}: {_NO_SPANS}")
    families = {parsed.family: name for _, name, parsed in pipelining}
    if len(families) > 1:
        examples = " and ".join(
            f"{family.split()[0]} ({name!r})" for family, name in sorted(families.items())
        )
        raise TraceError(f"{path}: mixes the spans of {examples}: one run per profile")
    threads = {where for where, _, _ in pipelining}
    if len(threads) > 1:
        raise TraceError(
            f"{path}: pipelining spans on {len(threads)} threads or processes "
            f"{sorted(map(str, threads))}: give one profile per rank"
        )
    return next(iter(families)), next(iter(threads))


def _span(found: _Found, operators: list[tuple[float, float]]) -> Span:
    parsed = found.parsed
    assert parsed.kind is not None  # spans without a pipesim action were counted, not found
    return Span(
        name=found.name,
        kind=parsed.kind,
        stage=parsed.stage,
        microbatch=parsed.microbatch,
        start=found.start,
        end=found.end,
        ops=_enclosed(operators, found.start, found.end),
    )


def _enclosed(ops: list[tuple[float, float]], start: float, end: float) -> tuple[float, float] | None:
    """(first start, last end) of the operators that lie wholly inside [start, end]; ops sorted by start."""
    window = ops[bisect.bisect_left(ops, (start,)) : bisect.bisect_right(ops, (end, float("inf")))]
    inside = [op for op in window if op[1] <= end]
    if not inside:
        return None
    return inside[0][0], max(op_end for _, op_end in inside)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None

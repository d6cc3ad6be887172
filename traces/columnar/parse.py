"""Events from their JSON form straight into columns, for the plain case: what pipesim itself writes.

    columns = event_columns(data["events"])   # EventColumns, or None: let the Event path read them

Plain means: every event is an object with rank, action, start and end (stream, bytes and memory may be
absent, as the format allows); the integers are JSON integers, the times numbers, the stream one of
STREAMS, and every action text parses. Anything else (a missing field, a string where a number belongs,
an action that does not parse) gives None, and traces.io reads the events one by one as it always has:
it names the first bad event, or reads what it accepts (a rank of "3") as it always did. So this path
changes how fast a file is read, never what is read or refused.

Note: the action texts are parsed all at once. Every digit becomes '#', so a million texts have a few
dozen distinct shapes ('#F#@v#', '#SEND_F#', ...); schedules.ir.parse_action parses one sample of each
shape, which says which field each run of digits is; the runs' values come from the bytes as arrays:

    "0F12@v0\\n13RECV_F7"  ->  shapes  '#F#@v#', '#RECV_F#'    numbers 0 12 0 13 7
                               fields  stage microbatch version | stage microbatch
"""

from __future__ import annotations

import re
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np

from schedules.ir import ScheduleError, parse_action
from traces.columnar.columns import KIND_CODE, NONE, STREAM_CODE, EventColumns

_DIGITS = bytes.maketrans(b"0123456789", b"##########")
_RUNS = re.compile("#+")
_LONGEST = 18
"""Digits a number may have here (int64); longer ones are left to the Event path."""


def event_columns(raw_events: list[Any]) -> EventColumns | None:
    """The columns of well-formed events; None where the Event path must read them (see the module)."""
    if not raw_events:
        return None
    try:
        fields = [_field(raw_events, name, default) for name, default in _FIELDS]
    except (KeyError, TypeError, AttributeError):
        return None
    rank, text, start, end, stream, moved, memory = fields
    count = len(raw_events)
    numbers = [_integers(rank, count), _integers(moved, count), _floats(start, count), _floats(end, count)]
    actions, streams, held = parse_actions(text), _streams(stream), _memory(memory, count)
    if actions is None or streams is None or held is None or any(array is None for array in numbers):
        return None
    kind, stage, microbatch, step, version, peer = actions
    return EventColumns(
        rank=numbers[0],
        kind=kind,
        stage=stage,
        microbatch=microbatch,
        step=step,
        version=version,
        peer=peer,
        start=numbers[2],
        end=numbers[3],
        stream=streams,
        bytes=numbers[1],
        memory=held[0],
        recorded=held[1],
    )


_REQUIRED = object()
_FIELDS = (
    ("rank", _REQUIRED),
    ("action", _REQUIRED),
    ("start", _REQUIRED),
    ("end", _REQUIRED),
    ("stream", "compute"),
    ("bytes", 0),
    ("memory", None),
)
"""Each event's fields and their defaults (traces.io reads them so)."""


def _field(raw_events: list[Any], name: str, default: Any) -> list[Any]:
    """One field of every event (KeyError, TypeError or AttributeError if an event does not have it)."""
    if default is _REQUIRED:
        return list(map(itemgetter(name), raw_events))
    try:  # pipesim writes every field: itemgetter is twice as fast as get
        return list(map(itemgetter(name), raw_events))
    except KeyError:
        return list(map(methodcaller("get", name, default), raw_events))


def _array(values: list[Any], count: int, kinds: str) -> np.ndarray | None:
    """values as a one-dimensional array if numpy reads them as one of these dtype kinds."""
    try:
        array = np.array(values)
    except (ValueError, TypeError, OverflowError):
        return None
    return array if array.shape == (count,) and array.dtype.kind in kinds else None


def _integers(values: list[Any], count: int) -> np.ndarray | None:
    """JSON integers (and booleans, which int() reads as 0 and 1) as int64."""
    array = _array(values, count, "ib")
    return None if array is None else array.astype(np.int64)


def _floats(values: list[Any], count: int) -> np.ndarray | None:
    """JSON numbers as float64, as float() reads them."""
    array = _array(values, count, "fib")
    return None if array is None else array.astype(np.float64)


def _streams(values: list[Any]) -> np.ndarray | None:
    try:
        found = list(map(STREAM_CODE.get, values))
    except TypeError:  # an unhashable value
        return None
    array = np.array(found)
    return array.astype(np.int8) if array.dtype.kind == "i" else None  # None for an unknown stream


def _memory(values: list[Any], count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(bytes, recorded): integers where recorded, null where not."""
    missing = values.count(None)
    if missing == count:
        return np.zeros(count, dtype=np.int64), np.zeros(count, dtype=bool)
    recorded = np.ones(count, dtype=bool)
    if missing:
        recorded = np.array([value is not None for value in values])
        values = [0 if value is None else value for value in values]
    held = _integers(values, count)
    return None if held is None else (held, recorded)


def parse_actions(texts: list[Any]) -> tuple[np.ndarray, ...] | None:
    """(kind int8, stage, microbatch, step, version, peer int64) of every text, as parse_action reads
    it; None if a text is not a plain ASCII string that parses (the Event path says what is wrong)."""
    try:
        blob = "\n".join(texts)
    except TypeError:  # a text that is not a string
        return None
    if not blob.isascii() or "#" in blob:  # '#' stands for a digit below
        return None
    data = blob.encode("ascii")
    shapes = data.translate(_DIGITS).split(b"\n")
    if len(shapes) != len(texts):  # a text with a newline in it
        return None
    index = dict.fromkeys(shapes)
    templates = []
    for position, shape in enumerate(index):
        template = _template(shape.decode("ascii"))
        if template is None:
            return None
        index[shape] = position
        templates.append(template)
    which = np.fromiter(map(index.__getitem__, shapes), dtype=np.int64, count=len(shapes))
    numbers = _numbers(data)
    table = np.array(templates, dtype=np.int64)  # per shape: kind, count, then each field's slot
    counts = table[which, 1]
    if numbers is None or numbers.size != int(counts.sum()):
        return None
    first = np.cumsum(counts) - counts

    def field(column: int, default: int) -> np.ndarray:
        slot = table[which, column]
        return np.where(slot >= 0, numbers[first + np.maximum(slot, 0)], default)

    kind = table[which, 0].astype(np.int8)
    return kind, numbers[first], field(2, NONE), field(3, 0), field(4, NONE), field(5, NONE)


def _template(shape: str) -> tuple[int, ...] | None:
    """(kind code, runs of digits, slot of microbatch, step, version and peer (-1: absent)) of the texts
    of this shape, read off a sample whose k-th run of digits is k + 1; None if the shape does not parse."""
    parts = _RUNS.split(shape)
    sample = "".join(f"{part}{index}" for index, part in enumerate(parts[:-1], start=1)) + parts[-1]
    try:
        action = parse_action(sample)
    except ScheduleError:
        return None
    slots = [NONE if value is None or value == 0 else value - 1 for value in action[2:]]
    return (KIND_CODE[action.kind], len(parts) - 1, *slots)


def _numbers(data: bytes) -> np.ndarray | None:
    """The value of every run of ASCII digits in data, in order (None if one is too long for int64)."""
    byte = np.frombuffer(data, dtype=np.uint8)
    digit = (byte - ord("0")) < 10  # uint8 wraps below '0'
    edges = np.flatnonzero(np.diff(digit, prepend=False, append=False))
    starts, length = edges[0::2], edges[1::2] - edges[0::2]
    longest = int(length.max(initial=0))
    if longest > _LONGEST:
        return None
    value = byte[starts].astype(np.int64) - ord("0")
    runs = np.arange(starts.size)
    for offset in range(1, longest):  # Horner's rule, one digit position at a time, on the longer runs
        runs = runs[length[runs] > offset]
        value[runs] = value[runs] * 10 + (byte[starts[runs] + offset] - ord("0"))
    return value

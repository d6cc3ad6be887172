"""The columnar path (traces/columnar) reads, refuses and measures every trace exactly as the Event path.

.venv/bin/pytest tests/traces/test_columnar.py -q

The Event path is what traces.io did before columns: every event made into an Event, checked one by one
(it stays, for what the columns cannot read and for the messages). Here each case is read both ways:
with the columns, and with `event_columns` replaced by one that declines everything.
"""

from __future__ import annotations

import copy
import pickle
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import traces.io
from schedules import SCHEDULES, build
from schedules.ir import Action, Kind, ScheduleError, format_action, parse_action
from simulator import CostModel, simulate
from traces.columnar import ColumnEvents, columns_of
from traces.columnar.parse import parse_actions
from traces.compare import compare_traces
from traces.io import trace_from_dict, trace_to_dict
from traces.metrics import compute_metrics
from traces.schema import Trace, TraceError

COSTS = CostModel.uniform(
    latency=0.1,
    bandwidth=100.0,
    activation_bytes=5,
    weight_bytes=7,
    jitter="normal",
    jitter_sigma=0.1,
    seed=2,
)


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    """PipeDream, 3 ranks, 4 microbatches, 2 steps: stashed versions, every stream, memory recorded."""
    return trace_to_dict(simulate(build("pipedream", 3, 4, 2), COSTS).trace())


def read_both(data: dict[str, Any], monkeypatch) -> tuple[Any, Any]:
    """(columnar outcome, Event-path outcome): a Trace, or the TraceError's message."""

    def outcome() -> Any:
        try:
            return trace_from_dict(copy.deepcopy(data))
        except TraceError as error:
            return str(error)

    fast = outcome()
    with monkeypatch.context() as patch:
        patch.setattr(traces.io, "event_columns", lambda raw: None)
        slow = outcome()
    return fast, slow


def first(data: dict[str, Any], text: str) -> dict[str, Any]:
    """The first event whose action text contains `text`."""
    return next(event for event in data["events"] if text in event["action"])


def drop(data: dict[str, Any], action: str, *, completed: bool = True) -> None:
    data["events"] = [event for event in data["events"] if event["action"] != action]
    if not completed:
        data["meta"]["completed"] = False


def repeat(data: dict[str, Any], index: int, action: str | None = None, *, completed: bool = True) -> None:
    """Insert a copy of event `index` right after it (same start: still sorted), maybe as another action."""
    again = dict(data["events"][index], **({} if action is None else {"action": action}))
    data["events"].insert(index + 1, again)
    if not completed:
        data["meta"]["completed"] = False


def find(data: dict[str, Any], action: str) -> int:
    return next(i for i, event in enumerate(data["events"]) if event["action"] == action)


HAND_MADE = [  # stage 0's gradient joins no update (stage 1's is not its stage)
    {"rank": 0, "action": "0F0@v0", "start": 0.0, "end": 1.0, "stream": "compute", "bytes": 0, "memory": 1},
    {"rank": 0, "action": "0B0@v0", "start": 1.0, "end": 2.0, "stream": "compute", "bytes": 0, "memory": 1},
    {"rank": 1, "action": "1OPT@v3", "start": 2.0, "end": 3.0, "stream": "compute", "bytes": 0, "memory": 1},
]


def swap(data: dict[str, Any], a: int, b: int) -> None:
    events = data["events"]
    events[a], events[b] = events[b], events[a]


CASES = {
    # what the columns read themselves, and what the Event path accepts that they hand over
    "as-written": lambda d: None,
    "stream-absent-on-compute": lambda d: first(d, "F0@").pop("stream"),
    "bytes-absent": lambda d: first(d, "SEND").pop("bytes"),
    "memory-all-null": lambda d: [event.update(memory=None) for event in d["events"]],
    "memory-one-null": lambda d: d["events"][3].update(memory=None),
    "rank-as-text": lambda d: d["events"][0].update(rank="0"),
    "rank-as-float": lambda d: d["events"][0].update(rank=0.0),
    "rank-as-bool": lambda d: first(d, "1F0").update(rank=True),
    "bytes-as-float": lambda d: first(d, "SEND").update(bytes=5.5),
    "bytes-beyond-int64": lambda d: first(d, "SEND").update(bytes=2**70),
    "memory-as-bool": lambda d: d["events"][0].update(memory=False),
    "start-as-int": lambda d: d["events"][0].update(start=0),
    "start-as-text": lambda d: d["events"][0].update(start="0"),
    "start-minus-infinity-first": lambda d: d["events"][0].update(start=float("-inf")),
    "time-minus-zero": lambda d: d["events"][0].update(start=-0.0),
    "action-with-spaces": lambda d: d["events"][0].update(action=" 0F0@v0 "),
    "action-leading-zeros": lambda d: d["events"][0].update(action="00F00@s0v0"),
    "action-other-digits": lambda d: d["events"][0].update(action="\u0660F0@v0"),  # Arabic-Indic zero
    "forward-without-microbatch": lambda d: repeat(d, 0, "0F@v0"),
    "forward-beyond-m": lambda d: repeat(d, 0, "0F9@v0"),
    "steps-1": lambda d: d["schedule"].update(steps=1),  # events of step 1 are extra, not counted
    "step-beyond-the-header": lambda d: d["events"].append(dict(d["events"][-1], action="0F0@s2v9", rank=0)),
    "stopped-early": lambda d: drop(d, "1B2@v0", completed=False),
    "stopped-early-no-events": lambda d: (d["events"].clear(), d["meta"].update(completed=False)),
    "repeated-when-stopped-early": lambda d: repeat(d, 0, completed=False),
    "version-missing-when-stopped-early": lambda d: repeat(d, 4, "0F1", completed=False),
    "forward-again-on-another-version": lambda d: repeat(d, 4, "0F1@v1", completed=False),  # the last counts
    "backward-again-on-another-version": lambda d: repeat(d, find(d, "0B0@v0"), "0B0@v1", completed=False),
    "update-of-another-stage-only": lambda d: d.update(events=HAND_MADE, meta={"completed": False}),
    # refused: each must be refused with the Event path's message
    "stream-unknown": lambda d: d["events"][0].update(stream="gpu"),
    "stream-absent-on-send": lambda d: first(d, "SEND").pop("stream"),
    "stream-unhashable": lambda d: d["events"][0].update(stream=["compute"]),
    "stream-of-another-kind": lambda d: first(d, "SEND").update(stream="recv"),
    "rank-of-another-stage": lambda d: d["events"][0].update(rank=1),
    "rank-beyond-int64": lambda d: d["events"][0].update(rank=2**70),
    "rank-absent": lambda d: d["events"][5].pop("rank"),
    "rank-null": lambda d: d["events"][5].update(rank=None),
    "end-nan": lambda d: d["events"][2].update(end=float("nan")),
    "end-infinite": lambda d: d["events"][2].update(end=float("inf")),
    "end-before-start": lambda d: d["events"][3].update(end=-1.0),
    "end-as-list": lambda d: d["events"][3].update(end=[1.0]),
    "unsorted": lambda d: swap(d, 0, 7),
    "action-malformed": lambda d: d["events"][1].update(action="0X1"),
    "action-a-number": lambda d: d["events"][1].update(action=5),
    "action-empty": lambda d: d["events"][1].update(action=""),
    "action-with-hash": lambda d: d["events"][0].update(action="0#F0@v0"),  # as many runs as its shape
    "action-with-newline": lambda d: d["events"][0].update(action="0F0\n@v0"),
    "action-with-lookahead": lambda d: d["events"][0].update(action="0F0@"),
    "stage-of-twenty-digits": lambda d: d["events"][0].update(action="1" * 20 + "F0@v0"),
    "stage-beyond-placement": lambda d: d["events"][0].update(action="9F0@v0"),
    "memory-as-text": lambda d: d["events"][0].update(memory="many"),
    "event-not-an-object": lambda d: d["events"].__setitem__(4, [1, 2]),
    "event-null": lambda d: d["events"].__setitem__(4, None),
    "forward-missing": lambda d: drop(d, "2F3@s1v1"),
    "backward-missing": lambda d: drop(d, "1B2@v0"),
    "forward-repeated": lambda d: repeat(d, 0),
    "events-empty": lambda d: d["events"].clear(),
    "header-promises-one-more-microbatch": lambda d: d["schedule"].update(microbatches=5),
    "header-promises-more-than-events": lambda d: d["schedule"].update(microbatches=50),
}


LEFT_TO_EVENTS = {
    "rank-as-text",
    "rank-as-float",
    "bytes-as-float",
    "bytes-beyond-int64",
    "start-as-text",
    "action-other-digits",
    "stopped-early-no-events",
}
"""Accepted cases the columns leave to the Event path (every other accepted case is read as columns)."""


@pytest.mark.parametrize("case", list(CASES))
def test_every_trace_is_read_or_refused_as_the_event_path_does(base, case: str, monkeypatch) -> None:
    data = copy.deepcopy(base)
    CASES[case](data)
    fast, slow = read_both(data, monkeypatch)
    assert fast == slow, case
    if isinstance(fast, Trace):  # and measured and compared alike
        assert (columns_of(fast) is None) == (case in LEFT_TO_EVENTS), case
        events = replace(fast, events=tuple(fast.events))
        assert repr(compute_metrics(fast)) == repr(compute_metrics(events))  # repr: NaN equals NaN
        assert repr(compare_traces(fast, fast).to_dict()) == repr(compare_traces(events, events).to_dict())


AMDP_CASES = {
    "as-written": lambda d: None,
    "update-without-peer": lambda d: first(d, "RECV_W").update(action=first(d, "RECV_W")["action"][:-2]),
    "update-from-a-stage-beyond": lambda d: first(d, "RECV_W@s1").update(
        action=first(d, "RECV_W@s1")["action"][:-1] + "9"
    ),
    "update-without-version": lambda d: first(d, "OPT@s1").update(
        action=re.sub(r"v\d+$", "", first(d, "OPT@s1")["action"])
    ),
    "owner-gradient-stale": lambda d: first(d, "0B0@s1").update(  # its replica (stage 4) reports it too
        action=re.sub(r"v\d+$", "v0", first(d, "0B0@s1")["action"])
    ),
    "gradient-never-applied": lambda d: drop(d, "0OPT@s2v3", completed=False),
}


@pytest.mark.parametrize("case", list(AMDP_CASES))
def test_replicas_updates_are_counted_alike(case: str, monkeypatch) -> None:
    """AMDP (replicas updated by RECV_W from their owner's stage), with the peers and versions a hand-made
    trace might lack or get wrong."""
    data = trace_to_dict(simulate(build("amdp", 4, 8, 3), COSTS).trace())
    AMDP_CASES[case](data)
    fast, slow = read_both(data, monkeypatch)
    assert isinstance(fast, Trace) and columns_of(fast) is not None and fast == slow, case
    assert compute_metrics(fast) == compute_metrics(slow)
    if case == "owner-gradient-stale":
        assert compute_metrics(fast).delay[4] == compute_metrics(fast).delay[0] > 0


@pytest.mark.parametrize("half", ["1W2@s1v1", "1I2@s1v1"])
def test_a_split_backward_needs_both_halves(half: str, monkeypatch) -> None:
    """ZB-H1 splits every backward into I and W: a trace without one half is refused, as on Events."""
    data = trace_to_dict(simulate(build("zb-h1", 3, 4, 2), COSTS).trace())
    drop(data, half)
    fast, slow = read_both(data, monkeypatch)
    assert fast == slow and "lacks 1 forward or backward action(s)" in fast


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_metrics_on_columns_equal_metrics_on_events_for_every_schedule(name: str) -> None:
    info = SCHEDULES[name]
    schedule = build(name, 4, 8, steps=3 if info.asynchronous else 2, chunks=info.default_chunks)
    trace = simulate(schedule, COSTS).trace()
    read = trace_from_dict(trace_to_dict(trace))
    assert columns_of(read) is not None and read == trace
    assert compute_metrics(read) == compute_metrics(trace)


def test_the_order_check_and_kind_table_on_columns_equal_those_on_events(base) -> None:
    other = copy.deepcopy(base)
    swap(other, 4, 7)  # rank 0 runs F2 before F1 (same start times kept: still sorted)
    for event, start in ((other["events"][4], 1.2338166736175902), (other["events"][7], 2.1675312828109083)):
        event["start"] = start
    stopped = copy.deepcopy(base)  # rank 1 without its last send: its executed order is a prefix of A's
    last_send = max(i for i, event in enumerate(base["events"]) if event["action"].startswith("1SEND"))
    del stopped["events"][last_send]
    stopped["meta"]["completed"] = False
    for b in (other, stopped):
        fast_a, fast_b = trace_from_dict(copy.deepcopy(base)), trace_from_dict(b)
        assert columns_of(fast_a) is not None and columns_of(fast_b) is not None
        slow_a, slow_b = (replace(trace, events=tuple(trace.events)) for trace in (fast_a, fast_b))
        fast, slow = compare_traces(fast_a, fast_b).to_dict(), compare_traces(slow_a, slow_b).to_dict()
        assert fast == slow and not fast["order_equal"]


def test_column_events_behave_as_the_tuple_of_their_events(base) -> None:
    trace = trace_from_dict(copy.deepcopy(base))
    events = trace.events
    assert isinstance(events, ColumnEvents)
    objects = tuple(events)
    assert events == objects and objects == events and hash(events) == hash(objects)
    assert events[3] == objects[3] and events[2:5] == objects[2:5] and len(events) == len(objects)
    again = pickle.loads(pickle.dumps(trace))  # the dashboard caches traces by pickling them
    assert again == trace and isinstance(again.events, ColumnEvents)
    assert events != objects[:-1] and events != list(objects)


def _action_text() -> st.SearchStrategy[str]:
    number = st.integers(min_value=0, max_value=10**6)
    optional = st.none() | number
    action = st.builds(Action, number, st.sampled_from(list(Kind)), optional, number, optional, optional)
    return action.map(format_action)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        _action_text() | st.text(alphabet="0123456789FBIWOPTSENDRCV_@sv> #\n\t٣", max_size=10),
        min_size=1,
        max_size=20,
    )
)
def test_actions_parse_all_at_once_as_one_by_one(texts: list[str]) -> None:
    parsed = parse_actions(texts)
    try:
        expected = [parse_action(text) for text in texts]
    except ScheduleError:
        assert parsed is None  # the Event path names the bad text
        return
    if parsed is None:  # allowed only for what the columns leave to the Event path
        assert any(not text.isascii() or "#" in text or "\n" in text for text in texts)
        return
    kind, stage, microbatch, step, version, peer = (column.tolist() for column in parsed)
    found = [
        Action(s, list(Kind)[k], None if m < 0 else m, t, None if v < 0 else v, None if p < 0 else p)
        for k, s, m, t, v, p in zip(kind, stage, microbatch, step, version, peer, strict=True)
    ]
    assert found == expected

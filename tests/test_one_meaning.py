"""One meaning per action: the dry run, the simulator, the executor's program and the trace metrics agree
with schedules.semantics on every schedule, action by action.

.venv/bin/pytest tests/test_one_meaning.py -q

What is checked, per schedule (every registered one, at a size with communication on every rank):
- messages: a send and its receive name the same schedules.semantics.message; the dry run makes each
  receive wait for exactly that send; the simulator numbers exactly those messages (one id each); the
  executor posts them under the same name (executor.interpreter.program.message_of);
- versions: the simulated trace records for every action the version the schedule names, and the trace
  metrics' weight versions held and delay per stage equal the analytics', which read
  schedules.semantics (version_lifetimes, stage_delays);
- overlapped pairs (OVERLAP_F_B, the schedules that have them): one interval of the pair's time in the dry
  run and in the simulated trace, starting when both halves can; the marker right before its halves in
  the executor's program; the pair's time counted once by the trace metrics.
"""

from __future__ import annotations

import pytest

from executor.interpreter.program import build_plans, message_of
from schedules import SCHEDULES, Costs, Kind, build
from schedules.analytics import analyze
from schedules.costs import overlapped
from schedules.dryrun import Dependencies, dry_run
from schedules.ir import COMM_KINDS, RECV_KINDS, SEND_KINDS
from schedules.semantics import counterpart, message, overlap_pairs, stage_delays
from simulator import CostModel, simulate
from simulator.plan import make_plan
from traces.metrics import compute_metrics


def schedule_of(name: str):
    info = SCHEDULES[name]
    return build(name, 4, 8, steps=3 if info.asynchronous else 2, chunks=info.default_chunks)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_send_and_receive_name_one_message_everywhere(name: str) -> None:
    schedule = schedule_of(name)
    layout = schedule.layout
    comms = [(rank, i, a) for rank, actions in enumerate(schedule.actions) for i, a in enumerate(actions)
             if a.kind in COMM_KINDS]  # fmt: skip
    assert comms, name
    sends = {message(layout, a) for _, _, a in comms if a.kind in SEND_KINDS}
    receives = {message(layout, a) for _, _, a in comms if a.kind in RECV_KINDS}
    assert sends == receives and None not in sends  # every message has both ends
    dependencies = Dependencies(schedule)
    plan = make_plan(schedule, CostModel.uniform(latency=0.1))
    ids: dict = {}
    for rank, i, action in comms:
        meaning = message(layout, action)
        assert tuple(message_of(action, layout)) == tuple(meaning), action  # the executor's name
        assert ids.setdefault(meaning, plan.messages[rank][i]) == plan.messages[rank][i], action
        if action.kind in RECV_KINDS:
            [(src_rank, src_index)] = dependencies.of(action)  # the dry run waits for exactly its send
            send = schedule.actions[src_rank][src_index]
            assert send.key == counterpart(layout, action) and message(layout, send) == meaning
    assert len(set(ids.values())) == len(ids) == plan.num_messages  # one simulator id per message


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_versions_and_staleness_read_the_same_everywhere(name: str) -> None:
    schedule = schedule_of(name)
    trace = simulate(schedule, CostModel.uniform(latency=0.1)).trace()
    ran = {(event.rank, event.action.key): event.action.version for event in trace.events}
    planned = {(rank, a.key): a.version for rank, actions in enumerate(schedule.actions) for a in actions}
    assert ran == planned
    metrics, analytics = compute_metrics(trace), analyze(schedule)  # the trace's own order and versions
    assert metrics.weight_versions == analytics.weight_versions
    assert metrics.delay == analytics.delay == stage_delays(schedule)
    assert metrics.mismatches == analytics.mismatches


@pytest.mark.parametrize("name", [name for name, info in SCHEDULES.items() if info.overlaps])
def test_an_overlapped_pair_is_one_interval_everywhere(name: str) -> None:
    """OVERLAP_F_B (schedules.semantics): the dry run and the simulator start a pair when both halves
    can and run it as one interval of schedules.costs.overlapped; the executor's program keeps the
    marker right before its halves, which it runs one after the other; the trace metrics count the
    pair's time once."""
    schedule = schedule_of(name)
    costs, model = (
        Costs(f=1, b=2, overlap_f_b=0.25),
        CostModel.uniform(forward=1, backward=2, overlap_f_b=0.25),
    )
    timeline, trace = dry_run(schedule, costs), simulate(schedule, model).trace()
    spans = {(event.rank, event.action): (event.start, event.end) for event in trace.events}
    chunk = schedule.chunks
    pairs = 0
    for rank, actions in enumerate(schedule.actions):
        for marker, forward, backward in overlap_pairs(actions):
            f, b = actions[forward], actions[backward]
            length = overlapped(costs.f / chunk, costs.b / chunk, costs.overlap_f_b)
            for start, end in ((timeline.start[rank], timeline.end[rank]), _spans(spans, rank, actions)):
                assert start[marker] == end[marker] == start[forward]  # the marker takes no time
                assert end[forward] == start[backward]  # one interval ...
                assert end[backward] - start[forward] == pytest.approx(length)  # ... of the pair's time
            waits = set(Dependencies(schedule).of(actions[marker]))
            assert waits == set(Dependencies(schedule).of(f)) | set(Dependencies(schedule).of(b))
            pairs += 1
    assert pairs
    for plan in build_plans(schedule):
        ops = plan.ops
        for index, op in enumerate(ops):
            if op.kind is Kind.OVERLAP_F_B:
                assert (ops[index + 1].kind, ops[index + 2].kind) in ((Kind.F, Kind.B), (Kind.F, Kind.I))
    metrics, analytics = compute_metrics(trace), analyze(schedule, costs)
    assert metrics.utilization == pytest.approx(analytics.utilization)


def _spans(spans: dict, rank: int, actions) -> tuple[list[float], list[float]]:
    return [spans[rank, a][0] for a in actions], [spans[rank, a][1] for a in actions]

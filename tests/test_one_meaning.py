"""One meaning per action: the dry run, the simulator, the executor's program and the trace metrics agree
with schedules.semantics on every schedule, action by action.

.venv/bin/pytest tests/test_one_meaning.py -q

What is checked, per schedule (every registered one, at a size with communication on every rank):
- messages: a send and its receive name the same schedules.semantics.message; the dry run makes each
  receive wait for exactly that send; the simulator numbers exactly those messages (one id each); the
  executor posts them under the same name (executor.program.message_of);
- versions: the simulated trace records for every action the version the schedule names, and the trace
  metrics' weight versions held and delay per stage equal the analytics', which read
  schedules.semantics (version_lifetimes, stage_delays).
"""

from __future__ import annotations

import pytest

from executor.program import message_of
from schedules import SCHEDULES, build
from schedules.analytics import analyze
from schedules.dryrun import Dependencies
from schedules.ir import COMM_KINDS, RECV_KINDS, SEND_KINDS
from schedules.semantics import counterpart, message, stage_delays
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

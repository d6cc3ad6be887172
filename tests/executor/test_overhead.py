"""What keeps the interpreter's own cost per action small, and that none of it changes what a run
computes or records.

Run: .venv/bin/pytest tests/executor/test_overhead.py

- the rank log keeps records in memory and writes them in batches: nothing reaches the file between two
  step boundaries (or beats), every line is what json.dumps writes, and every way out writes the rest;
- every send is let go once a later message from its receiver proves it delivered (program.settled_sends):
  a rank holds a bounded number of sent tensors, not every one of the run;
- a receive is posted as soon as the peer's previous message is taken only where the rank sends that
  peer nothing before it (program.eager_receives): GPipe's streams, not 1F1B's ping-pong;
- 2BW's forwards on the older buffer run on the module itself (its parameters wear that version), with
  the same losses as on leaves, and the live weights are back in place at the end;
- losses read back in batches (the device path: one synchronisation per step, not per microbatch) are
  the same numbers, and `--no-trace` trains the same losses with no events in its trace.
- the memory count, which keeps what changes rarely between ops, gives the bytes that adding every
  part up after every op gives, in every recorded event.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from executor.interpreter.hooks import Hooks
from executor.interpreter.memory import MemoryCount
from executor.interpreter.program import Extra, build_plans, eager_receives, pair_orders, settled_sends
from executor.interpreter.runtime import Runtime
from executor.run.assemble import Assembly
from executor.run.local import run_local
from executor.run.runconfig import RunConfig
from executor.run.runfolder import RankLog
from executor.training.data import load_corpus
from pipesim.cli import main
from schedules import SCHEDULES, build, parse_action

SMALL = dict(microbatch_size=1, seq_len=16, layers=2, hidden=16, val_every=0)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_the_rank_log_writes_in_batches_the_lines_json_would_write(tmp_path):
    path = tmp_path / "rank0.jsonl"
    log = RankLog(path, 0)
    assert [json.loads(line)["t"] for line in lines(path)] == ["start"]  # at once: the launcher needs the pid
    events = [
        (3, parse_action("1F2@s3v3"), 1.25, 1.5000000001, 0, 123),
        (4, 'we"ird\\', 1e-07, 2.0, 4096, None),
    ]
    for record in events:
        log.event(*record)
    log.loss(3, 2, 4.5, 1.75)
    assert len(lines(path)) == 1  # kept until the step boundary
    log.cut(3, 2.5)
    written = lines(path)[1:]
    for (index, op, start, end, moved, memory), line in zip(events, written, strict=False):
        record = {"t": "event", "i": index, "a": str(op), "s": start, "e": end, "b": moved, "m": memory}
        assert line == json.dumps(record, separators=(",", ":"))
    assert [json.loads(line)["t"] for line in written] == ["event", "event", "loss", "cut"]
    log.event(5, parse_action("1B2@s3v3"), 3.0, 3.5, 0, 1)
    log.beat()  # the watchdog's beat writes what ran meanwhile
    assert json.loads(lines(path)[-1])["i"] == 5
    log.event(6, parse_action("1OPT@s3v4"), 4.0, 4.5, 0, 1)
    log.end("ok")
    assert [json.loads(line)["t"] for line in lines(path)[-2:]] == ["event", "end"]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_send_is_settled_by_a_later_message_from_its_receiver(name):
    """The settling message comes back after the receiver took the send; only a rank's last sends to a
    peer (nothing comes back after them) are left to the end of the run."""
    info = SCHEDULES[name]
    schedule = build(name, 4, 8, 3, 2 if info.uses_chunks or info.v_shaped else 1)
    plans = build_plans(schedule, val_steps=frozenset({1}))
    placement = schedule.layout.placement
    settles = settled_sends([(p.send_index, p.recv_index) for p in plans], placement)
    for plan, mine in zip(plans, settles, strict=True):
        settled = {sent: reply for reply, sents in mine.items() for sent in sents}
        for message, index in plan.send_index.items():
            peer = plans[placement[message.dst]]
            if message not in settled:  # none of the peer's later sends comes back here
                after = [m for m, i in peer.send_index.items() if i > peer.recv_index[message]]
                assert all(placement[m.dst] != plan.rank for m in after), (name, message)
                continue
            reply = settled[message]
            assert peer.send_index[reply] > peer.recv_index[message]  # sent after the peer took ours
            assert plan.recv_index[reply] > index


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "interleaved"])
def test_a_receive_is_posted_early_only_where_the_rank_sends_its_peer_nothing_before_it(name):
    schedule = build(name, 2, 6, 2, 2 if SCHEDULES[name].uses_chunks else 1)
    plans = build_plans(schedule)
    orders, placement = pair_orders(plans, schedule.layout), schedule.layout.placement
    for plan in plans:
        eager = eager_receives(plan, orders, placement)
        for (src, dst), messages in orders.items():
            if dst != plan.rank:
                continue
            for taken, upcoming in itertools.pairwise(messages):
                begin, end = plan.recv_index[taken], plan.recv_index[upcoming]
                sends = [m for m, i in plan.send_index.items() if begin < i < end and placement[m.dst] == src]
                assert (taken in eager) == (begin < end and not sends), (name, plan.rank, taken)
        kinds = {message.kind for message in eager}
        if name == "gpipe":  # a stream of forwards (rank 1) or of gradients (rank 0) within each step
            assert len(eager) == 2 * 5 and kinds == ({"B"} if plan.rank == 0 else {"F"})
        if name == "1f1b":  # ping-pong: only rank 0's last gradients of a step (the cool-down)
            assert {m.microbatch for m in eager} <= ({4} if plan.rank == 0 else set())


def test_a_rank_holds_a_bounded_number_of_sent_tensors(corpus):
    cfg = RunConfig(schedule="1f1b", stages=2, microbatches=8, steps=6, **SMALL)
    most = [0, 0]

    built = []

    def hooks_for(rank: int) -> Hooks:
        def before_op(index, op) -> None:
            most[rank] = max(most[rank], len(built[rank].mailman.in_flight))

        return Hooks(before_op=before_op)

    runtimes = run_local(Assembly(cfg, corpus=corpus), hooks_for=hooks_for, configure=built.extend)
    sends = [sum(1 for op in r.plan.ops if op.kind.startswith("SEND")) for r in runtimes]
    assert sends == [48, 48] and max(most) <= 4  # P = 2: a message or two in each direction


def test_2bw_runs_its_older_buffer_on_the_module_itself(corpus, monkeypatch):
    cfg = RunConfig(schedule="2bw", stages=2, microbatches=4, steps=4, **SMALL)
    seen = []

    def configure(runtimes):
        for runtime in runtimes:
            original = runtime.forward_graph

            def recorded(state, op, x, *, frozen, original=original):
                record = original(state, op, x, frozen=frozen)
                seen.append((op.step, record.leaves is None, state.holds == op.version))
                return record

            runtime.forward_graph = recorded

    worn = run_local(Assembly(cfg, corpus=corpus), configure=configure)
    later = [(plain, holds) for step, plain, holds in seen if step > 0]
    assert len(later) == 2 * 4 * 3 and sum(plain for plain, _ in later) == len(later) - 3  # w_0 = 1 frozen
    assert all(holds for plain, holds in later if plain)  # the parameters held the version it read
    # Never worn: every forward on an older version runs on leaves, as before wearing existed.
    monkeypatch.setattr(
        Runtime,
        "_weights",
        lambda self, state, version, frozen: (
            None if version == state.store.live and not frozen else state.leaves(version, frozen=frozen)
        ),
    )
    leaves = run_local(Assembly(cfg, corpus=corpus))
    assert [[loss[:3] for loss in r.losses] for r in worn] == [
        [loss[:3] for loss in r.losses] for r in leaves
    ]
    for a, b in zip(worn, leaves, strict=True):
        for stage, state in a.stages.items():
            assert state.worn is None and state.store.live == cfg.steps  # the live weights are back
            assert all(torch.equal(p, q) for p, q in zip(state.params, b.stages[stage].params, strict=True))


class StepTimer:
    """A device timer's interface on the CPU: 'events' are clock readings, read back at flush."""

    def __init__(self) -> None:
        self.pending, self.flushes, self.clock = [], 0, 0.0

    def begin(self) -> float:
        self.clock += 1.0
        return self.clock

    def later(self, start, end, emit) -> None:
        self.pending.append((start, end, emit))

    def flush(self) -> None:
        self.flushes += 1
        for start, end, emit in self.pending:
            emit(start, end)
        self.pending = []


def test_losses_read_back_once_a_step_are_the_same(corpus):
    cfg = RunConfig(schedule="1f1b", stages=2, microbatches=4, steps=3, **SMALL)
    timers = [StepTimer(), StepTimer()]
    timed = run_local(Assembly(cfg, corpus=corpus), hooks_for=lambda rank: Hooks(timer=timers[rank]))
    plain = run_local(Assembly(cfg, corpus=corpus))
    assert [(s, j, v) for s, j, v, _ in timed[1].losses] == [(s, j, v) for s, j, v, _ in plain[1].losses]
    assert len(timed[1].losses) == 12 and timers[1].flushes == cfg.steps + 1  # every cut, and the end
    assert all(isinstance(t, float) and t == int(t) for *_, t in timed[1].losses)  # the timer's times


def test_an_untraced_run_trains_the_same_losses_and_records_no_events(tmp_path, capsys):
    flags = ["--schedule", "2bw", "-p", "2", "-m", "4", "--steps", "3", "--microbatch-size", "1"]
    flags += ["--seq-len", "16", "--val-every", "2", "--single-process"]
    assert main(["run", *flags, "--out", str(tmp_path / "traced")]) == 0
    assert main(["run", *flags, "--no-trace", "--out", str(tmp_path / "untraced")]) == 0
    assert "step 3/3" in capsys.readouterr().err
    metrics = [lines(tmp_path / name / "metrics.jsonl") for name in ("traced", "untraced")]
    strip = [[{k: v for k, v in json.loads(line).items() if k not in ("time", "tokens_per_s")} for line in m]
             for m in metrics]  # fmt: skip
    assert len(strip[0]) == 3 and strip[0] == strip[1]
    traces = [json.loads((tmp_path / name / "trace.json").read_text()) for name in ("traced", "untraced")]
    assert traces[0]["events"] and traces[1]["events"] == []
    assert traces[0]["meta"]["completed"] and traces[1]["meta"]["completed"]
    assert not RunConfig.from_dict(
        json.loads((tmp_path / "untraced" / "config.json").read_text())["config"]
    ).trace


class Summed:
    """The memory count as it was before its parts were kept between ops (the reference): weights x
    versions, optimizer state, saved activations and received tensors added up again after every op;
    only the gradient buffers' bytes kept until an op says they changed. It wraps the count a runtime
    uses, and checks every value that count gives against its own."""

    def __init__(self, memory: MemoryCount) -> None:
        self.memory, self.checked = memory, 0
        self.grad_bytes: int | None = None
        self.grads_complete = False

    def optimizer_changed(self) -> None:
        self.memory.optimizer_changed()

    def weights_changed(self) -> None:
        self.memory.weights_changed()  # (the reference counts the versions again anyway)

    def grads_changed(self, how: int) -> None:
        self.memory.grads_changed(how)
        if how > self.grads_complete:
            self.grad_bytes = None

    def held(self, forwards, pending) -> int:
        stages = self.memory.stages
        if self.grad_bytes is None:
            grads = [p.grad for state in stages.values() for p in state.params]
            self.grad_bytes = sum(grad.nbytes for grad in grads if grad is not None)
            self.grads_complete = all(grad is not None for grad in grads)
        total = self.grad_bytes + sum(s.optimizer.state_bytes() for s in stages.values() if s.optimizer)
        total += sum(state.store.held_bytes() for state in stages.values())
        total += sum(stages[key.stage].saved_bytes or 0 for key in forwards)
        total += sum(tensor.nbytes for tensors in pending for tensor in tensors.values())
        ours = self.memory.held(forwards, pending)
        assert ours == total
        self.checked += 1
        return ours


class Quiet:
    """A recorder that takes everything and keeps nothing (the memory count runs for traced events)."""

    def event(self, *args) -> None: ...
    def loss(self, *args) -> None: ...
    def val(self, *args) -> None: ...
    def cut(self, *args) -> None: ...


# Each case keeps or moves bytes in its own way; P = 2 (AMDP: 4), m = 4, 3 steps.
MEMORY_CASES = [
    ("2bw", 1, {}),  # two weight versions, worn buffers, releases
    ("pipedream", 1, {}),  # stashed versions, one update per microbatch
    ("zb-h1", 1, {}),  # I and W split: the W adds into the gradient buffers later
    ("interleaved", 2, {"layers": 4}),  # two stages per rank: forwards of either in flight, local hand-offs
    ("amdp", 1, {"layers": 4, "stages": 4}),  # weights sent and received (SEND_W / RECV_W), gradients (G)
]


@pytest.mark.parametrize(("schedule", "chunks", "extra"), MEMORY_CASES)
def test_the_memory_kept_between_ops_is_what_adding_it_all_up_gives(corpus, schedule, chunks, extra):
    settings = {**SMALL, "stages": 2, **extra}
    cfg = RunConfig(schedule=schedule, microbatches=4, steps=3, chunks=chunks, **settings)
    checks: list[Summed] = []

    def configure(runtimes):
        for runtime in runtimes:
            runtime.memory = Summed(runtime.memory)
            checks.append(runtime.memory)

    runtimes = run_local(
        Assembly(cfg, corpus=corpus), hooks_for=lambda _: Hooks(recorder=Quiet()), configure=configure
    )
    assert [check.checked for check in checks] == [
        sum(1 for op in runtime.plan.ops if not isinstance(op, Extra)) for runtime in runtimes
    ]

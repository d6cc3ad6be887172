"""Point-to-point messages of one rank: torch.distributed isend/irecv, or local hand-offs in one process.

    mailman = Mailman(rank, DistTransport(), orders, buffer_of)
    mailman.exchange(sends=[(message, tensor)], recvs=[message])    # one batch_isend_irecv
    tensor = mailman.take(message, timeout=60.0)
    mailman.start_sum(step, tensor); total = mailman.take_sum(step, timeout=60.0)   # over all ranks

Every (sender, receiver) pair carries its messages in one static order, the sender's (see
executor.interpreter.program.pair_orders). A receiver posts its receives in that order, together with
any earlier message of the pair it has not posted yet; the tag of a message is 1 + its position in the
pair's order.
Transports that match by tag (gloo) and those that match by order (NCCL) both see the same pairs.

A sent tensor is held until its send is known delivered: when a later message from its receiver
arrives that proves it (executor.interpreter.program.settled_sends), or at the end. gloo's send handles
report completion only once waited for, so asking them (as the runtime once did, every batch) never let
one go.

Sums over all ranks (the global gradient norm of a step, see executor.interpreter.gradnorm) are an
all-reduce in distributed mode, and in single-process mode contributions left in the shared post
office, summed in rank order once every rank has left its own (the round-robin scheduler waits on them
like on a receive).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import torch
import torch.distributed as dist

from executor.interpreter.program import Message


class Handle(Protocol):
    def wait(self, timeout: float | None = None) -> None: ...
    def is_completed(self) -> bool: ...


@dataclass
class P2P:
    """One transfer to start: a send of `tensor` to `peer`, or a receive into `tensor` from `peer`."""

    send: bool
    tensor: torch.Tensor
    peer: int
    tag: int


class Transport(Protocol):
    def start(self, ops: list[P2P]) -> list[Handle]: ...
    def ready(self, op: P2P, handle: Handle) -> bool: ...
    def result(self, op: P2P, handle: Handle) -> torch.Tensor: ...
    def start_sum(self, key: int, tensor: torch.Tensor) -> Handle: ...
    def sum_ready(self, key: int, handle: Handle) -> bool: ...
    def sum_result(self, key: int, tensor: torch.Tensor, handle: Handle) -> torch.Tensor: ...


class DistTransport:
    """torch.distributed p2p: several ops due together go out as one batch_isend_irecv (NCCL coalesces
    them into one launch). gloo has no coalescing: batch_isend_irecv only loops over isend and irecv,
    so the ops go straight to the process group's send and recv, as isend and irecv would pass them
    after their argument checks (a tenth of a small send's cost)."""

    def __init__(self) -> None:
        self.world = None  # the default process group where it is gloo (ranks are its own ranks)

    def start(self, ops: list[P2P]) -> list[Handle]:
        if self.world is None:
            world = dist.group.WORLD
            self.world = world if dist.get_backend(world) == "gloo" else False
        if self.world:
            return [
                self.world.send([op.tensor], op.peer, op.tag)
                if op.send
                else self.world.recv([op.tensor], op.peer, op.tag)
                for op in ops
            ]
        if len(ops) == 1:
            op = ops[0]
            call = dist.isend if op.send else dist.irecv
            return [call(op.tensor, op.peer, tag=op.tag)]
        p2p = [
            dist.P2POp(dist.isend if op.send else dist.irecv, op.tensor, op.peer, tag=op.tag) for op in ops
        ]
        return dist.batch_isend_irecv(p2p)

    def ready(self, op: P2P, handle: Handle) -> bool:
        return handle.is_completed()

    def result(self, op: P2P, handle: Handle) -> torch.Tensor:
        return op.tensor

    def start_sum(self, key: int, tensor: torch.Tensor) -> Handle:
        return dist.all_reduce(tensor, async_op=True)

    def sum_ready(self, key: int, handle: Handle) -> bool:
        return handle.is_completed()

    def sum_result(self, key: int, tensor: torch.Tensor, handle: Handle) -> torch.Tensor:
        return tensor


class _Done:
    def wait(self, timeout: float | None = None) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class LocalPostOffice:
    """The shared mailbox of the single-process mode: (sender, receiver, tag) -> tensor, and the
    contributions to each sum over the `ranks` ranks: key -> {rank: tensor}."""

    def __init__(self, ranks: int = 1) -> None:
        self.ranks = ranks
        self.boxes: dict[tuple[int, int, int], torch.Tensor] = {}
        self.sums: dict[int, dict[int, torch.Tensor]] = {}
        self.summed: dict[int, set[int]] = {}
        """key -> ranks that took the sum (it is dropped once all have)."""


class LocalTransport:
    """In-process hand-offs for one rank of the single-process mode (sends never block)."""

    def __init__(self, rank: int, office: LocalPostOffice) -> None:
        self.rank = rank
        self.office = office

    def start(self, ops: list[P2P]) -> list[Handle]:
        for op in ops:
            if op.send:
                self.office.boxes[self.rank, op.peer, op.tag] = op.tensor.detach()
        return [_Done() for _ in ops]

    def ready(self, op: P2P, handle: Handle) -> bool:
        return (op.peer, self.rank, op.tag) in self.office.boxes

    def result(self, op: P2P, handle: Handle) -> torch.Tensor:
        return self.office.boxes.pop((op.peer, self.rank, op.tag))

    def start_sum(self, key: int, tensor: torch.Tensor) -> Handle:
        self.office.sums.setdefault(key, {})[self.rank] = tensor.detach().clone()
        return _Done()

    def sum_ready(self, key: int, handle: Handle) -> bool:
        return len(self.office.sums.get(key, {})) == self.office.ranks

    def sum_result(self, key: int, tensor: torch.Tensor, handle: Handle) -> torch.Tensor:
        parts = self.office.sums[key]
        total = parts[0].clone()
        for rank in range(1, self.office.ranks):  # rank order: the same bits on every rank
            total += parts[rank]
        taken = self.office.summed.setdefault(key, set())
        taken.add(self.rank)
        if len(taken) == self.office.ranks:
            del self.office.sums[key], self.office.summed[key]
        return total


class CommError(RuntimeError):
    """A receive failed: its peer died, or it did not complete in time."""


class Mailman:
    """The sends and receives of one rank, posted in each pair's static order."""

    def __init__(
        self,
        rank: int,
        transport: Transport,
        orders: dict[tuple[int, int], list[Message]],
        rank_of: Callable[[int], int],
        buffer_of: Callable[[Message], torch.Tensor],
        settles: dict[Message, tuple[Message, ...]] | None = None,
        *,
        eager: frozenset[Message] = frozenset(),
    ) -> None:
        self.rank = rank
        self.transport = transport
        self.rank_of = rank_of
        self.buffer_of = buffer_of
        self.settles = settles or {}
        """A received message -> this rank's sends its arrival proves delivered (program.settled_sends)."""
        self.set_orders(orders)
        self.posted: dict[Message, tuple[P2P, Handle]] = {}
        self.in_flight: dict[Message, tuple[Handle, torch.Tensor]] = {}
        """Sends not known to be delivered (their tensors must stay alive until then)."""
        self.summing: dict[int, tuple[torch.Tensor, Handle]] = {}
        self.limits: dict[float, timedelta] = {}
        self.bytes_sent = 0
        self.eager = eager
        """Received messages after whose take the peer's next one is posted at once (gloo; NCCL would
        hold the pair's stream on it): see program.eager_receives."""

    def set_orders(self, orders: dict[tuple[int, int], list[Message]]) -> None:
        """Install the pair orders (again on resume, where they start after the cut)."""
        self.tags: dict[Message, int] = {}
        self.incoming: dict[int, list[Message]] = {}
        self.next_post: dict[int, int] = {}
        for (src, dst), messages in orders.items():
            for position, message in enumerate(messages):
                self.tags[message] = position + 1  # tag 0 stays free for control messages (the clock)
            if dst == self.rank:
                self.incoming[src] = messages
                self.next_post[src] = 0
        self.position = {m: i for src, ms in self.incoming.items() for i, m in enumerate(ms)}
        self.waiting_from: dict[int, int] = dict.fromkeys(self.incoming, 0)
        """Per sending rank, how many of its messages are posted and not yet taken (none are, here:
        orders are installed before the first receive, and again on resume before any)."""

    def exchange(self, *, sends: list[tuple[Message, torch.Tensor]], recvs: list[Message]) -> None:
        """Start the sends and post the receives (and their predecessors) together."""
        ops: list[tuple[Message, P2P]] = []
        for message, tensor in sends:
            tensor = tensor.detach().contiguous()
            ops.append((message, P2P(True, tensor, self.rank_of(message.dst), self.tags[message])))
        for message in recvs:
            ops += self._to_post(message)
        if not ops:
            return
        handles = self.transport.start([op for _, op in ops])
        for (message, op), handle in zip(ops, handles, strict=True):
            if op.send:
                self.in_flight[message] = (handle, op.tensor)
                self.bytes_sent += op.tensor.nbytes
            else:
                self.posted[message] = (op, handle)
                self.waiting_from[op.peer] += 1

    def _to_post(self, message: Message) -> list[tuple[Message, P2P]]:
        src = self.rank_of(message.src)
        order, start = self.incoming[src], self.next_post[src]
        end = self.position[message] + 1
        self.next_post[src] = max(start, end)
        return [
            (earlier, P2P(False, self.buffer_of(earlier), src, self.tags[earlier]))
            for earlier in order[start:end]
        ]

    def ready(self, message: Message) -> bool:
        """Whether take() would return at once (the single-process scheduler asks before running)."""
        if message not in self.posted:
            self.exchange(sends=[], recvs=[message])
        op, handle = self.posted[message]
        return self.transport.ready(op, handle)

    def take(self, message: Message, timeout: float | None = None) -> torch.Tensor:
        """Wait for a posted (or not yet posted) receive and hand over its tensor."""
        if message not in self.posted:
            self.exchange(sends=[], recvs=[message])
        op, handle = self.posted.pop(message)
        self.waiting_from[op.peer] -= 1
        try:
            handle.wait(self._limit(timeout)) if timeout is not None else handle.wait()
        except RuntimeError as error:
            if timeout is None:
                raise
            raise CommError(
                f"receive of {message.kind}{message.microbatch} from rank {op.peer} failed: {_reason(error)}"
            ) from None
        if message in self.eager:
            self._post_next(op.peer)
        for sent in self.settles.get(message, ()):
            self._settle(sent, timeout)
        return self.transport.result(op, handle)

    def _settle(self, message: Message, timeout: float | None) -> None:
        """Let go of a send known to be delivered (its wait returns at once; see program.settled_sends)."""
        done = self.in_flight.pop(message, None)
        if done is not None:
            done[0].wait(self._limit(timeout)) if timeout is not None else done[0].wait()

    def _limit(self, timeout: float) -> timedelta:
        limit = self.limits.get(timeout)
        if limit is None:
            limit = self.limits[timeout] = timedelta(seconds=timeout)
        return limit

    def start_sum(self, key: int, tensor: torch.Tensor) -> None:
        """Add this rank's `tensor` to the sum `key` over all ranks (once; later calls do nothing)."""
        if key not in self.summing:
            tensor = tensor.detach().clone()
            self.summing[key] = (tensor, self.transport.start_sum(key, tensor))

    def sum_ready(self, key: int) -> bool:
        """Whether take_sum() would return at once (every rank has contributed)."""
        return self.transport.sum_ready(key, self.summing[key][1])

    def take_sum(self, key: int, timeout: float | None = None) -> torch.Tensor:
        """Wait for the sum `key` over all ranks (started by start_sum) and hand it over."""
        tensor, handle = self.summing.pop(key)
        try:
            handle.wait(timedelta(seconds=timeout)) if timeout is not None else handle.wait()
        except RuntimeError as error:
            raise CommError(f"the sum over all ranks (step {key}) failed: {_reason(error)}") from None
        return self.transport.sum_result(key, tensor, handle)

    def _post_next(self, src: int) -> None:
        """Post the peer's next message now, so its bytes arrive while this rank computes."""
        order, start = self.incoming[src], self.next_post[src]
        if start < len(order) and not self.waiting_from[src]:
            self.exchange(sends=[], recvs=[order[start]])

    def finish(self, timeout: float | None = None) -> None:
        """Wait for every send still in flight (before the process group goes away)."""
        for handle, _ in self.in_flight.values():
            handle.wait(self._limit(timeout)) if timeout is not None else handle.wait()
        self.in_flight = {}


def _reason(error: BaseException) -> str:
    """The gist of a transport error: no source location, no advice."""
    text = re.sub(r"\[[^\]]*\]\s*", "", str(error).strip().splitlines()[0] if str(error).strip() else "")
    return text.split(". This is")[0].rstrip(".") or type(error).__name__

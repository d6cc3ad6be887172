"""DualPipeV, DeepSeek's DualPipe cut in half into a V (DeepSeek-AI 2024; Sea AI Lab's "cut-in-half"),
docs/schedules.md.

    pipesim schedules show dualpipev -p 4 -m 8

The V placement of ZB-V (`v_layout`: rank r holds stages r and 2P-1-r, chunks 0 and 1), and in its
steady state every rank runs the forward of one chunk overlapped with the full backward of the other
(OVERLAP_F_B pairs: one compute interval, schedules/costs.py). Its warm-up and cool-down split some
backwards into I and W, whose Ws queue up and fill the gaps. Needs m >= 2P. The order is
torch.distributed.pipelining's ScheduleDualPipeV (the same as deepseek-ai/DualPipe's dualpipev.py), rank
for rank. Phases on rank r (F0 / B0 / I0: chunk 0's; (F0 B1): an overlapped pair; W: the oldest I's
weight gradient still owed, if any):

    1 warm-up:   F0 x 2(P-r-1)
    2            (F0 F1) x (r+1)
    3            (I1 W F1) x (P-r-1)
    4 steady:    ((F0 B1) (F1 B0)) x (m - 2P + r + 1); on the last rank the first F0 B1 not overlapped
    5 cool-down: (B1 (F1 B0)) x (P-r-1)
    6            (B1 B0) x (r+1), half of them as I instead of B (from the middle one on)
    7            (W I0) x (P-r-1)
    8            W x (r+1)
"""

from __future__ import annotations

from collections import Counter, deque

from schedules.ir import Action, Kind, Schedule, ScheduleError, Versioning, v_layout
from schedules.steps import repeat_steps


def generate(ranks: int, microbatches: int, steps: int = 1) -> Schedule:
    if microbatches < 2 * ranks:
        raise ScheduleError(
            f"dualpipev needs microbatches m >= 2P (its 2P stages), got m = {microbatches}, P = {ranks}"
        )

    def one_step(rank: int, step: int) -> list[Action]:
        chunk = (rank, 2 * ranks - 1 - rank)
        forwards: Counter[int] = Counter()
        backwards: Counter[int] = Counter()
        owed: deque[Action] = deque()  # Ws of split backwards, oldest first
        order: list[Action] = []

        def forward(c: int) -> Action:
            forwards[c] += 1
            return Action(chunk[c], Kind.F, forwards[c] - 1, step)

        def backward(c: int, split: bool = False) -> Action:
            backwards[c] += 1
            j = backwards[c] - 1
            if split:
                owed.append(Action(chunk[c], Kind.W, j, step))
            return Action(chunk[c], Kind.I if split else Kind.B, j, step)

        def overlapped(f: int, b: int) -> list[Action]:
            first = forward(f)
            return [Action(first.stage, Kind.OVERLAP_F_B, first.microbatch, step), first, backward(b)]

        def weight() -> list[Action]:
            return [owed.popleft()] if owed else []

        order += [forward(0) for _ in range(2 * (ranks - rank - 1))]  # 1
        for _ in range(rank + 1):  # 2
            order += [forward(0), forward(1)]
        for _ in range(ranks - rank - 1):  # 3
            order += [backward(1, split=True), *weight(), forward(1)]
        for i in range(microbatches - 2 * ranks + rank + 1):  # 4
            if i == 0 and rank == ranks - 1:
                order += [forward(0), backward(1)]  # as DualPipe: this pair is not overlapped
            else:
                order += overlapped(0, 1)
            order += overlapped(1, 0)
        for _ in range(ranks - rank - 1):  # 5
            order += [backward(1), *overlapped(1, 0)]
        split = False
        for i in range(rank + 1):  # 6
            split |= i == (rank + 1) // 2 and rank % 2 == 1
            order.append(backward(1, split))
            split |= i == (rank + 1) // 2 and rank % 2 == 0
            order.append(backward(0, split))
        for _ in range(ranks - rank - 1):  # 7
            order += [*weight(), backward(0, split)]
        for _ in range(rank + 1):  # 8
            order += weight()
        return order

    return Schedule(
        name="dualpipev",
        layout=v_layout(ranks),
        microbatches=microbatches,
        steps=steps,
        chunks=2,
        versioning=Versioning.FLUSH,
        actions=repeat_steps(ranks, steps, one_step),
    )

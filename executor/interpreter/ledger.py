"""Which update the gradients in each stage's buffer join, checked where an update applies them.

    ledger = Ledger(plan.joins)
    ledger.accumulated(index, stage)   # the B or W at op `index` added its weight gradient to the buffer
    ledger.handed_over(stage)          # SEND_G: a replica's buffer went to the owner (and is empty now)
    ledger.applied(op)                 # OPT or RECV_W: the update must apply exactly its gradients

The runtime's gradient buffer is order-based: a weight gradient stays in param.grad until the stage's
next SEND_G or OPT. The labels come from the one definition of which update a gradient joins
(schedules.semantics, via RankPlan.joins). An update that applies a gradient labelled for another
update, or leaves one labelled for itself in the buffer, stops the run: the executor would otherwise
train a different rule than the analytics and the simulator report.
"""

from __future__ import annotations

from collections import defaultdict

from schedules.ir import Action, Kind


class Ledger:
    """Per stage, the update each gradient in its buffer (or handed to its owner) joins."""

    def __init__(self, joins: dict[int, int | None]) -> None:
        self.joins = joins
        self.buffer: dict[int, list[int | None]] = defaultdict(list)
        self.handed: dict[int, list[int | None]] = {}

    def accumulated(self, index: int, stage: int) -> None:
        self.buffer[stage].append(self.joins.get(index))

    def handed_over(self, stage: int) -> None:
        self.handed[stage] = self.buffer.pop(stage, [])

    def applied(self, op: Action) -> None:
        """Check an OPT (applies the stage's buffer) or a RECV_W (the owner applied what SEND_G handed)."""
        if op.kind is Kind.OPT:
            applied, left = self.buffer.pop(op.stage, []), []
        else:
            applied, left = self.handed.pop(op.stage, []), self.buffer.get(op.stage, [])
        wrong = {str(v) for v in applied if v != op.version} | {str(v) for v in left if v == op.version}
        if wrong:
            raise RuntimeError(
                f"{op} writes version {op.version} but its gradients were labelled for updates to "
                f"{', '.join(sorted(wrong))} (schedules.semantics): the buffer and the rule disagree"
            )

"""The lr sweep on the synchronous reference: which runs it makes, which lr wins, when it looks further.

    grid = initial_grid(study)                  # {optimizer: [lr, ...]}: the preset's or --lr-grid
    cell = sweep_cell(study, "adamw")           # 1F1B at the smallest depth, the first seed
    lr = best({1e-3: 2.61, 3e-3: 2.67})         # the lowest final validation loss
    extension({1e-3: 2.61, 3e-3: 2.67})         # 3e-4: the best sits at an edge, look one step beyond

A best lr at the edge of the grid says only that the optimum may lie outside it, so the sweep takes one
more step along LADDER past that edge, up to study.sweep_extend times. A run that diverged counts as
the worst; a tie goes to the smaller lr. The sweep never looks at an asynchronous schedule.
"""

from __future__ import annotations

from executor.study.grid import Cell, StudyConfig, base_optimizers

LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
"""Learning rates in half-decades: where an extension of the sweep looks next."""


def initial_grid(study: StudyConfig) -> dict[str, list[float]]:
    """Per base optimizer without a fixed lr (--lr): its grid, sorted."""
    return {
        name: sorted(study.lr_grid.get(name, ())) for name in base_optimizers(study) if name not in study.lrs
    }


def sweep_cell(study: StudyConfig, optimizer: str) -> Cell:
    return Cell(schedule=study.reference, variant=optimizer, stages=min(study.depths), seed=study.seeds[0])


def best(results: dict[float, float | None]) -> float:
    """The lr with the lowest final validation loss; diverged (None) last; a tie to the smaller lr."""
    return min(results, key=lambda lr: (results[lr] is None, results[lr] or 0.0, lr))


def extension(results: dict[float, float | None]) -> float | None:
    """The next lr past the grid's edge when the best is that edge; None when it is inside (or one lr)."""
    tried, winner = sorted(results), best(results)
    if len(tried) < 2:
        return None
    if winner == tried[-1]:
        return next((lr for lr in LADDER if lr > winner * 1.01), None)
    if winner == tried[0]:
        return next((lr for lr in reversed(LADDER) if lr < winner / 1.01), None)
    return None

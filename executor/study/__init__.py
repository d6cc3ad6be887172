"""The staleness study: does asynchrony pay? Convergence per schedule and optimizer, and time to a target.

    pipesim study --preset quick --out study/quick        # the command (pipesim/commands/study.py)

Modules: grid (the cells and the fair-comparison rules: equal tokens, PipeDream's two lr rules, the
lr schedule in steps), presets (quick, paper), train (one run in the executor's single-process mode),
store (the study folder: one JSONL per run, atomic, resumable), pool (process pool, progress bar,
Ctrl-C), analysis (target, gaps, iterations and time to target), report (CSV and Markdown), figures
(plotly). The step times come from the simulator, which the executor may not import: that part is
pipesim/commands/study_tasks.py. docs/study/README.md describes the folder for readers and the dashboard.
"""

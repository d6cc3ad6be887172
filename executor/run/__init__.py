"""A run's life: from the command line to a run folder with its metrics, trace and checkpoints.

runconfig    RunConfig, checked before any process starts
runfolder    the folder, its lock, the rank logs
assemble     one rank put together from the config (stages, data, mailman, hooks, checkpoint)
launch       `pipesim run`: torchrun (worker, one process per rank) or one process (local)
supervise, watchdog, monitor, progress, collect    watching a run, never hanging, metrics and trace
checkpoint, checkpoint_files                       saving at step boundaries, resuming from them
"""

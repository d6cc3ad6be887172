"""The real executor: runs lowered schedules with torch.distributed (gloo on CPU, NCCL on CUDA) and records
measured traces. Entry points: `pipesim run` (executor.run.launch) and `python -m executor.worker` under
torchrun.

Rooms, each importing only from the ones before it (tests/test_import_direction.py checks it):

    training/     what is trained: the GPT model split into stages, the data, the optimizers
    interpreter/  one rank's program and the interpreter that runs it: program -> entries -> runtime
                  (compute, comm, versions, weight gradients, memory, validation, hooks)
    run/          a run's life: config, folder, assemble, launch, worker, local, checkpoints, monitor
    study/        the staleness study, built on whole runs
"""

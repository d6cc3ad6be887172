"""The command torchrun starts on every rank of a real run: one rank (executor.run.worker).

    torchrun --nproc-per-node 2 -m executor.worker --run-dir runs/NAME [--resume-from CHECKPOINT]

A name of its own at the top of the package, so that the launch lines `pipesim run --prepare` prints (and
those already written down) keep working wherever the run's life lives inside the executor.
"""

from executor.run.worker import run_as_main

if __name__ == "__main__":
    run_as_main()

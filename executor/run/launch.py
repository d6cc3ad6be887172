"""`pipesim run`: make the run folder ready, start the ranks, follow them, and leave a complete folder.

    pipesim run --schedule 2bw --stages 2 --microbatches 8 --steps 50 --optimizer adamw --model tiny \\
        --device cpu --out runs/NAME

On one machine it starts torch.distributed.run itself (nproc = ranks, 127.0.0.1 and a free port,
GLOO_SOCKET_IFNAME=lo, one thread per rank on CPU) and follows the per-rank logs to print progress
(executor.run.supervise); with --single-process every rank runs in this process instead (executor.run.local).
Several machines are torchrun's job: write the run folder once (`pipesim run ... --prepare`, on a shared
file system), then start executor.worker through torchrun on every node, as the printed command says;
rank 0 then assembles the folder (executor.run.collect).

The folder is locked (runs/NAME/lock) while the run owns it. SIGINT, SIGTERM and SIGHUP stop every rank
and torchrun; whatever ends a run, metrics.jsonl and trace.json hold what ran, and the trace's meta says
whether the run completed. A resume appends to the rank logs and deletes nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from executor.errors import ExecutorConfigError
from executor.run import cpus
from executor.run.assemble import Assembly
from executor.run.checkpoint_files import checkpoint_time, complete_checkpoints, find_checkpoint
from executor.run.local import Stopped, run_in_process
from executor.run.monitor import Monitor, run_meta
from executor.run.progress import Progress, print_summary, say
from executor.run.runconfig import RunConfig, validate_run
from executor.run.runfolder import FolderLock, RunFolder, new_segment
from executor.run.supervise import Supervisor
from executor.run.worker import LAUNCHER_ENV, SEGMENT_ENV
from executor.training.data import Corpus
from schedules import Schedule

ROOT = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_command(config: RunConfig, folder: RunFolder, port: int, resume_from: Path | None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc-per-node={config.stages}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "--max-restarts=0",
        "--monitor-interval=0.2",
        "-m",
        "executor.worker",
        "--run-dir",
        str(folder.path),
    ]
    return command + (["--resume-from", str(resume_from)] if resume_from else [])


def worker_env(config: RunConfig, segment: str) -> dict[str, str]:
    env = dict(os.environ)
    env[SEGMENT_ENV] = segment
    env["OMP_NUM_THREADS"] = str(config.threads)
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env[LAUNCHER_ENV] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A run folder made ready for one run: checked, locked, config.json written."""

    schedule: Schedule
    """The lowered schedule of the run."""
    folder: RunFolder
    """The run folder."""
    lock: FolderLock
    """Held until the run ends (released by the kernel if this process dies)."""
    checkpoint: Path | None
    """The checkpoint folder a resumed run starts from; None for a new run."""
    corpus: Corpus
    """The training data, loaded once (the single-process mode trains on it)."""


def prepare(config: RunConfig, *, warn=None, here: bool = True) -> Prepared:
    """Validate, lock the folder, pick the checkpoint to resume from, write config.json. Deletes nothing.
    `here`: the run starts on this machine (False for --prepare: its devices are not checked)."""
    schedule, corpus = validate_run(config, here=here)
    folder = RunFolder(config.resume or config.out)
    lock = _claim(folder, resuming=config.resume is not None)
    try:
        checkpoint = _resume_point(config, folder, schedule, warn) if config.resume is not None else None
        data = corpus.describe()
        folder.write_config(config, {"schedule_actions": sum(map(len, schedule.actions)), "data": data})
    except BaseException:
        lock.release()
        raise
    return Prepared(schedule=schedule, folder=folder, lock=lock, checkpoint=checkpoint, corpus=corpus)


def _claim(folder: RunFolder, *, resuming: bool) -> FolderLock:
    """Create the folder if needed and lock it; a new run needs it new or empty."""
    path, flag = folder.path, "--resume" if resuming else "--out"
    if not resuming:
        if path.exists() and not path.is_dir():
            raise ExecutorConfigError(f"--out {path} is a file, not a folder")
        if path.is_dir():
            _check_fresh(folder)  # before the lock file: a folder that is not ours stays untouched
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ExecutorConfigError(f"--out {path}: cannot create it ({error.strerror or error})") from None
    try:
        lock = FolderLock(folder, "pipesim run")
    except OSError as error:
        raise ExecutorConfigError(f"{flag} {path}: cannot write there ({error.strerror or error})") from None
    if not resuming:
        try:
            _check_fresh(folder)  # again under the lock: another run may have taken it meanwhile
        except ExecutorConfigError:
            lock.release()
            raise
    return lock


def _check_fresh(folder: RunFolder) -> None:
    if folder.config.exists():
        raise ExecutorConfigError(
            f"--out {folder.path} already holds a run; choose another --out or --resume it"
        )
    found = sorted(entry.name for entry in folder.path.iterdir() if entry.name != folder.lock_file.name)
    if found:
        listed = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise ExecutorConfigError(
            f"--out {folder.path} is not empty and holds no run ({listed}); choose a new or empty folder"
        )


def _resume_point(config: RunConfig, folder: RunFolder, schedule: Schedule, warn) -> Path:
    """The newest good checkpoint (a damaged newer one skipped with a warning); refuses a finished run."""
    monitor = Monitor(folder, config, schedule, write=False)
    monitor.poll()
    if monitor.completed:
        raise ExecutorConfigError(
            f"--resume {folder.path}: the run already finished all {config.steps} steps"
        )
    found = find_checkpoint(folder.checkpoints, config.stages, warn)
    if found is None:
        raise ExecutorConfigError(
            f"--resume {folder.path}: no complete checkpoint in {folder.checkpoints} to resume from"
        )
    if warn is not None and found[1] != complete_checkpoints(folder.checkpoints, config.stages)[-1][1]:
        warn(f"resuming from the older checkpoint {found[1].name}")
    return found[1]


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP become a request to stop, honoured between two actions (single
    process) or at the next poll (torchrun). Outside the main thread nothing is installed."""

    def __enter__(self) -> StopSignals:
        self.signal: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self.previous[number] = signal.signal(number, self._note)
        return self

    def _note(self, number: int, frame) -> None:
        self.signal = self.signal or number

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def launch(config: RunConfig, *, err: TextIO | None = None, out: TextIO | None = None) -> int:
    """Run to the end: 0 when every rank finished, 1 (and one clause per rank) when the run failed,
    128 + the signal's number when a signal stopped it."""
    err, out = err or sys.stderr, out or sys.stdout
    warn = _warn_to(err)
    prepared = prepare(config, warn=warn)
    if (crowded := cpus.crowding(config)) is not None:
        warn(crowded)
    with prepared.lock, StopSignals() as stop:
        return Launch(config, prepared, stop, err, out).run()


def _warn_to(stream: TextIO):
    def warn(text: str) -> None:
        print(f"pipesim: warning: {text}", file=stream, flush=True)

    return warn


class Launch:
    """One run of a prepared folder, on torchrun or in this process."""

    def __init__(self, config: RunConfig, prepared: Prepared, stop: StopSignals, err: TextIO, out: TextIO):
        self.config, self.prepared, self.stop, self.out = config, prepared, stop, out
        self.folder, self.checkpoint = prepared.folder, prepared.checkpoint
        self.monitor = Monitor(self.folder, config, prepared.schedule)
        self.monitor.poll()  # a resumed run starts from what the logs already hold
        self.progress = Progress(config, err, start=len(self.monitor.metrics))

    def show(self) -> None:
        self.progress.show(self.monitor)

    def run(self) -> int:
        started = time.monotonic()
        failure = self._local() if self.config.single_process else self._torchrun()
        return self._finish(failure, time.monotonic() - started)

    def _torchrun(self) -> str | None:
        command = torchrun_command(self.config, self.folder, free_port(), self.checkpoint)
        with self.folder.log.open("a") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command[1:])}\n")
            log.flush()
            process = subprocess.Popen(
                command,
                env=worker_env(self.config, new_segment()),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches this process only; it stops the rest
                pass_fds=(self.prepared.lock.fd,),  # the lock lives as long as torchrun does
            )
            supervisor = Supervisor(process, self.config, self.monitor, self.show, self._stop_requested)
            try:
                supervisor.follow()
            finally:
                supervisor.kill_all()
        if self.stop.signal:
            return None
        return supervisor.failure(self.config.build_plans(self.prepared.schedule))

    def _stop_requested(self) -> bool:
        return self.stop.signal is not None

    def _local(self) -> str | None:
        shift = checkpoint_time(self.checkpoint, self.config.stages) if self.checkpoint else 0.0
        try:
            return run_in_process(
                Assembly(self.config, self.prepared.schedule, self.prepared.corpus),
                self.folder,
                self.checkpoint,
                time_shift=shift,
                poll=self._poll,
                stop_requested=self._stop_requested,
            )
        except Stopped:
            return None

    def _poll(self) -> None:
        if self.monitor.poll():
            self.show()

    def _finish(self, failure: str | None, wall: float) -> int:
        monitor = self.monitor
        monitor.poll()
        self.show()
        monitor.sync_metrics()
        name = signal.Signals(self.stop.signal).name if self.stop.signal else None
        completed = monitor.completed and failure is None and name is None
        extra = {"stopped_by": name} if name else {}
        if self.config.device == "cpu" and not self.config.single_process:  # its ranks all ran here
            extra["cpus"] = cpus.usable_cpus()  # (what a prediction for more ranks needs to know)
            extra["pinned"] = cpus.placement(self.config) is not None  # as the ranks pinned themselves
        monitor.write_trace(run_meta(self.config, completed=completed, launcher="pipesim run", **extra))
        self.progress.close()
        if completed:
            print_summary(self.config, self.folder, monitor, wall, self.out)
            return 0
        done = f"after step {len(monitor.metrics)} of {self.config.steps}"
        if name:
            say(
                f"pipesim: stopped by {name} {done}; the trace so far is in {self.folder.trace}",
                self.progress,
            )
        else:
            failure = failure or "the ranks ended, but their logs miss actions of the schedule"
            say(f"pipesim: error: run failed {done}: {failure}", self.progress)
            say(f"pipesim: the trace so far is in {self.folder.trace}", self.progress)
        say(self._resume_hint(), self.progress)
        return 128 + self.stop.signal if name else 1

    def _resume_hint(self) -> str:
        if complete_checkpoints(self.folder.checkpoints, self.config.stages):
            return f"pipesim: continue it with: pipesim run --resume {self.folder.path}"
        return "pipesim: no checkpoint to resume from (--checkpoint-every N saves one every N steps)"


def prepare_only(config: RunConfig, out: TextIO | None = None) -> int:
    """Write the run folder and print the torchrun commands that run it (one machine or several)."""
    out = out or sys.stdout
    prepared = prepare(config, warn=_warn_to(sys.stderr), here=False)
    prepared.lock.release()
    folder, ranks = prepared.folder, config.stages
    resume = f" --resume-from {prepared.checkpoint}" if prepared.checkpoint else ""
    worker = f"-m executor.worker --run-dir {folder.path}{resume}"
    lines = [
        f"wrote {folder.config}; start its {ranks} ranks through torchrun. On one machine:",
        f"  torchrun --nnodes=1 --nproc-per-node={ranks} {worker}",
        "On several machines, on every one of them (NODES machines x RANKS_PER_NODE ranks = "
        f"{ranks}; HOST: the address of one of them):",
        "  torchrun --nnodes=NODES --nproc-per-node=RANKS_PER_NODE --rdzv-backend=c10d "
        f"--rdzv-endpoint=HOST:29500 {worker}",
        "Rank 0 writes metrics.jsonl and trace.json into the folder as the run goes.",
    ]
    if config.device == "cuda" and not torch.cuda.is_available():
        lines.append(f"note: no CUDA device here; the run needs {ranks} GPUs, one per rank, where it starts")
    print("\n".join(lines), file=out)
    return 0

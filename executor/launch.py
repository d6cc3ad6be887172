"""`pipesim run`: start the ranks, follow their logs, and leave a complete run folder behind.

    pipesim run --schedule 2bw --stages 2 --microbatches 8 --steps 50 --optimizer adamw --model tiny \\
        --device cpu --out runs/NAME

On one machine it starts torch.distributed.run itself (nproc = ranks, 127.0.0.1 and a free port,
GLOO_SOCKET_IFNAME=lo, one thread per rank on CPU) and follows the per-rank logs to print progress; with
--single-process every rank runs in this process instead (executor.local). Several machines are
torchrun's job: write the run folder once (`pipesim run ... --out runs/NAME --prepare`, on a shared file
system), then on every node

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m executor.worker --run-dir runs/NAME

Never hang: the ranks stop themselves after --timeout seconds without progress (executor.worker); this
side also kills whatever is left once the logs have been silent for longer than that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import torch

from executor.checkpoint import checkpoint_time, latest_checkpoint
from executor.errors import ExecutorConfigError
from executor.runconfig import RunConfig, validate
from executor.runfolder import Monitor, RunFolder
from schedules import Schedule

ROOT = Path(__file__).resolve().parent.parent
GRACE = 15.0
"""Seconds of silence beyond --timeout after which the launcher kills the ranks itself."""


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


def worker_env(config: RunConfig, time_shift: float) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(config.threads)
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env["PIPESIM_TIME_SHIFT"] = repr(time_shift)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def prepare(config: RunConfig) -> tuple[Schedule, RunFolder, Path | None]:
    """Validate, then set the folder up: config.json, no stale logs; returns the checkpoint to resume."""
    schedule = validate(config)
    folder = RunFolder(config.resume or config.out)
    checkpoint = None
    if config.resume is not None:
        checkpoint = latest_checkpoint(folder.path, config.stages)[1]
        if folder.trace.exists():
            n = len(list(folder.path.glob("trace.segment*.json")))
            folder.trace.rename(folder.path / f"trace.segment{n}.json")
    elif folder.config.exists():
        raise ExecutorConfigError(
            f"--out {folder.path} already holds a run; choose another --out or --resume it"
        )
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.metrics.unlink(missing_ok=True)
    for log in folder.ranks.glob("rank*.jsonl") if folder.ranks.exists() else []:
        log.unlink()
    folder.write_config(config, {"schedule_actions": sum(len(a) for a in schedule.actions)})
    return schedule, folder, checkpoint


def launch(config: RunConfig, *, err: TextIO | None = None, out: TextIO | None = None) -> int:
    """Run to the end; 0 when every rank finished, 1 (and one line per rank) when the run failed."""
    err, out = err or sys.stderr, out or sys.stdout
    schedule, folder, checkpoint = prepare(config)
    shift = checkpoint_time(checkpoint, config.stages) if checkpoint else 0.0
    monitor = Monitor(folder, config, schedule)
    progress = Progress(config, err)
    started = time.monotonic()
    if config.single_process:
        failure = _run_local(config, schedule, folder, monitor, progress, checkpoint, shift)
    else:
        failure = _run_torchrun(config, folder, monitor, progress, checkpoint, shift)
    monitor.poll()
    progress.show(monitor)
    monitor.write_metrics()
    monitor.write_trace(_meta(config, failure is None))
    progress.close()
    if failure:
        print(f"pipesim: error: run failed: {failure}", file=err)
        print(f"pipesim: the trace so far is in {folder.trace}", file=err)
        return 1
    print_summary(config, folder, monitor, time.monotonic() - started, out)
    return 0


def _run_local(config, schedule, folder, monitor, progress, checkpoint, shift) -> str | None:
    from executor.assemble import Assembly
    from executor.checkpoint import attach
    from executor.local import build_local, round_robin
    from executor.runfolder import RankLog
    from executor.worker import Clock

    torch.set_num_threads(config.threads)
    assembly = Assembly(config, schedule)
    clock = Clock(0, time.perf_counter_ns() - int(shift * 1e9))
    logs = [RankLog(folder.rank_log(rank), rank) for rank in range(config.stages)]
    runtimes = build_local(assembly, logs.__getitem__)
    for runtime in runtimes:
        runtime.clock = clock.now
        attach(runtime, assembly, folder, str(checkpoint) if checkpoint else None)

    def poll() -> None:
        if monitor.poll():
            progress.show(monitor)

    try:
        round_robin(runtimes, poll)
    except Exception as error:  # the message names the rank and the op
        stuck = [r for r in runtimes if not r.done]
        return f"{type(error).__name__}: {error}" + (
            f" (rank {stuck[0].rank} at op {stuck[0].index})" if stuck else ""
        )
    for runtime, log in zip(runtimes, logs, strict=True):
        runtime.finish()
        log.end("ok")
    return None


def _run_torchrun(config, folder, monitor, progress, checkpoint, shift) -> str | None:
    command = torchrun_command(config, folder, free_port(), checkpoint)
    with folder.log.open("w") as log:
        process = subprocess.Popen(
            command,
            env=worker_env(config, shift),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = _follow(process, config, monitor, progress)
        finally:
            _kill_leftovers(process, monitor)
    return (
        None
        if code == 0 and all(r.end and r.end["status"] == "ok" for r in monitor.ranks)
        else _failure(config, monitor, code)
    )


def _follow(process: subprocess.Popen, config: RunConfig, monitor: Monitor, progress: Progress) -> int:
    """Poll logs until torchrun exits; kill it when the ranks have been silent for too long."""
    quiet_since = time.monotonic()
    while process.poll() is None:
        time.sleep(0.1)
        if monitor.poll():
            quiet_since = time.monotonic()
            progress.show(monitor)
        if time.monotonic() - quiet_since > config.timeout + GRACE:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return -signal.SIGKILL
    return process.returncode


def _kill_leftovers(process: subprocess.Popen, monitor: Monitor) -> None:
    """Kill any rank process still alive (by the pid it logged), and torchrun's own process group."""
    monitor.poll()
    for state in monitor.ranks:
        if state.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(state.pid, signal.SIGKILL)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _failure(config: RunConfig, monitor: Monitor, code: int) -> str:
    """One clause per rank that did not finish: which op it was on and why it stopped."""
    plans = config.build_plans()
    clauses = []
    for rank, state in enumerate(monitor.ranks):
        if state.end and state.end["status"] == "ok":
            continue
        if state.end:
            clauses.append(f"rank {rank} stopped on {state.end['op']} ({state.end['message']})")
            continue
        ops = plans[rank].ops
        on = ops[state.last_index + 1] if state.last_index + 1 < len(ops) else "its last op"
        clauses.append(
            f"rank {rank} ended without a word (crashed or killed) on {on}"
            if state.pid
            else f"rank {rank} never started"
        )
    return "; ".join(clauses) or f"torchrun exited with code {code}"


def _meta(config: RunConfig, completed: bool) -> dict:
    backend = "local" if config.single_process else ("nccl" if config.device == "cuda" else "gloo")
    return {
        "device": config.device,
        "backend": backend,
        "clock": "CUDA events" if config.device == "cuda" else "perf_counter_ns, offsets to rank 0 estimated",
        "seed": config.seed,
        "torch": torch.__version__,
        "completed": completed,
        "workload": {
            "microbatch_size": config.microbatch_size,
            "sequence_length": config.model_config.seq_len,
            "data_parallel": 1,
        },
        "config": config.to_dict(),
    }


class Progress:
    """The progress line on stderr: step, loss, validation loss, tokens/s (redrawn on a terminal)."""

    def __init__(self, config: RunConfig, err: TextIO) -> None:
        self.config, self.err = config, err
        self.tty = err.isatty()
        self.shown = 0
        self.every = max(1, config.steps // 20)

    def show(self, monitor: Monitor) -> None:
        while self.shown < len(monitor.metrics):
            line = monitor.metrics[self.shown]
            self.shown += 1
            if self.tty or self.shown % self.every == 0 or self.shown == self.config.steps:
                self._print(line)

    def _print(self, line: dict) -> None:
        steps = self.config.steps
        done = int(20 * (line["step"] + 1) / steps)
        val = f"  val {line['val_loss']:.4f}" if "val_loss" in line else ""
        text = (
            f"[{'#' * done}{'.' * (20 - done)}] step {line['step'] + 1}/{steps}  loss {line['loss']:.4f}"
            f"{val}  {line['tokens_per_s']:,.0f} tok/s  {line['time']:.1f} s"
        )
        try:
            shown = ("\r" + text) if self.tty else text
            print(shown, end="" if self.tty else "\n", file=self.err, flush=True)
        except BrokenPipeError:  # whoever read the progress left (`... 2>&1 | head`): train on, silently
            self.err = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run

    def close(self) -> None:
        if self.tty and self.shown:
            print(file=self.err)


def print_summary(config: RunConfig, folder: RunFolder, monitor: Monitor, wall: float, out: TextIO) -> None:
    metrics = monitor.metrics
    rates = sorted(line["tokens_per_s"] for line in metrics[1:]) or [0.0]
    vals = [(line["val_loss"], line["step"]) for line in metrics if "val_loss" in line]
    mode = "single process" if config.single_process else f"torchrun, {_meta(config, True)['backend']}"
    rows = [
        ("run", f"{config.schedule}, P={config.stages}, m={config.microbatches}, {config.steps} steps"),
        ("model / optimizer", f"{config.model}, {config.optimizer.name} lr {config.optimizer.lr:g}"),
        ("device", f"{config.device} ({mode})"),
        ("first / final loss", f"{metrics[0]['loss']:.4f} / {metrics[-1]['loss']:.4f}" if metrics else "-"),
        ("best val loss", f"{min(vals)[0]:.4f} (step {min(vals)[1] + 1})" if vals else "-"),
        ("tokens/s (median)", f"{rates[len(rates) // 2]:,.0f}"),
        ("wall time", f"{wall:.1f} s"),
        ("folder", f"{folder.path} (config.json, metrics.jsonl, trace.json)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)


def prepare_only(config: RunConfig, out: TextIO | None = None) -> int:
    """Write the run folder and print the torchrun command that runs it (several machines)."""
    out = out or sys.stdout
    _, folder, checkpoint = prepare(config)
    command = torchrun_command(config, folder, 29500, checkpoint)[3:]
    print(f"wrote {folder.config}; run it with (add --nnodes/--rdzv-* for several machines):", file=out)
    print(" ".join(["torchrun", *command]), file=out)
    return 0

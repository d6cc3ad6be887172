"""What a run prints: the progress line while it trains and the summary table at the end.

    progress = Progress(config, sys.stderr, start=len(monitor.metrics))
    progress.show(monitor)          # after every Monitor.poll
    print_summary(config, folder, monitor, wall_seconds, sys.stdout)

Steps count from 1 here as in metrics.jsonl: "step 4/4" is the line {"step": 4}.
"""

from __future__ import annotations

import os
from typing import TextIO

from executor.run import cpus
from executor.run.monitor import Monitor
from executor.run.runconfig import RunConfig
from executor.run.runfolder import RunFolder


class Progress:
    """The progress line on stderr: step, loss, validation loss, tokens/s (redrawn on a terminal)."""

    def __init__(self, config: RunConfig, err: TextIO, *, start: int = 0, tty: bool | None = None) -> None:
        self.config, self.err = config, err
        self.tty = err.isatty() if tty is None else tty
        self.shown = start  # a resumed run does not print again the steps it starts after
        self.printed = False
        self.every = max(1, config.steps // 20)

    def show(self, monitor: Monitor) -> None:
        self.shown = min(self.shown, len(monitor.metrics))  # a resumed run replaced the lines after its cut
        while self.shown < len(monitor.metrics):
            line = monitor.metrics[self.shown]
            self.shown += 1
            if self.tty or line["step"] % self.every == 0 or line["step"] == self.config.steps:
                self._print(line)

    def _print(self, line: dict) -> None:
        steps = self.config.steps
        done = int(20 * line["step"] / steps)
        val = f"  val {_number(line['val_loss'])}" if "val_loss" in line else ""
        text = (
            f"[{'#' * done}{'.' * (20 - done)}] step {line['step']}/{steps}  loss {_number(line['loss'])}"
            f"{val}  {line['tokens_per_s']:,.0f} tok/s  {line['time']:.1f} s"
        )
        self.printed = True
        say(("\r" + text) if self.tty else text, self, end="" if self.tty else "\n")

    def close(self) -> None:
        if self.tty and self.printed:
            say("", self)


def say(text: str, progress: Progress, end: str = "\n") -> None:
    """Print to the progress stream; once its reader is gone (`| head`, a closed terminal), train on
    silently rather than stop."""
    try:
        print(text, end=end, file=progress.err, flush=True)
    except OSError:  # BrokenPipeError, or EIO from a terminal that was closed (SIGHUP)
        progress.err = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _placement(config: RunConfig) -> str:
    """Where a CPU run's ranks ran: ', rank r on CPU c, ...' when pinned (executor.run.cpus)."""
    if config.device != "cpu":
        return ""
    placed = cpus.placement(config)
    if placed is None:
        return ", ranks not pinned"
    return ", " + ", ".join(f"rank {rank} on CPU {','.join(map(str, on))}" for rank, on in enumerate(placed))


def print_summary(config: RunConfig, folder: RunFolder, monitor: Monitor, wall: float, out: TextIO) -> None:
    metrics = monitor.metrics
    rates = sorted(line["tokens_per_s"] for line in metrics[1:]) or [0.0]
    vals = [(line["val_loss"], line["step"]) for line in metrics if line.get("val_loss") is not None]
    backend = "nccl" if config.device == "cuda" else "gloo"
    mode = "single process" if config.single_process else f"torchrun, {backend}{_placement(config)}"
    first_last = f"{_number(metrics[0]['loss'])} / {_number(metrics[-1]['loss'])}" if metrics else "-"
    rows = [
        ("run", f"{config.schedule}, P={config.stages}, m={config.microbatches}, {config.steps} steps"),
        ("model / optimizer", f"{config.model}, {config.optimizer.name} lr {config.optimizer.lr:g}"),
        ("device", f"{config.device} ({mode})"),
        ("first / final loss", first_last),
        ("best val loss", f"{min(vals)[0]:.4f} (step {min(vals)[1]})" if vals else "-"),
        ("tokens/s (median)", f"{rates[len(rates) // 2]:,.0f}"),
        ("wall time", f"{wall:.1f} s"),
        ("folder", f"{folder.path} (config.json, metrics.jsonl, trace.json)"),
    ]
    width = max(len(name) for name, _ in rows)
    try:
        for name, value in rows:
            print(f"  {name:<{width}}  {value}", file=out)
    except OSError:  # nobody reads any more: the folder holds everything
        pass

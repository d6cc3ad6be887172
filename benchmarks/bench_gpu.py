"""The executor's CUDA path on one GPU, measured against the analytic h100-sxm preset.

    python benchmarks/bench_gpu.py --out gpu-runs              # gpt2-small, P = 4, m = 8 (two minutes)
    python benchmarks/bench_gpu.py --model small --steps 4     # a smaller smoke run
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --model tiny --stages 2   # the script, on a CPU

One GPU cannot hold several NCCL ranks, so every run is `pipesim run --single-process --device cuda`:
all P ranks in this process, taking turns on the one GPU's stream. Compute actions are timed with CUDA
events (read back once per step), memory is each rank's tensors (the allocator's count would mix the
ranks); the allocator's peak over all ranks is read here. Per precision (fp32, and TF32 matrix products):

- runs with the trace recorded and with `--no-trace`, alternating (`--rounds` pairs, the order swapped
  every round: on a lent GPU one launch-bound run's step time differed from the next by up to 15%, and
  a single pair once said recording cost 20%): each run's median step time (warm-up dropped), and
  recording's cost as the median over rounds of the traced run's step time over its pair's;
- the calibration of the recorded run (traces.calibrate): per stage the fitted F, B and OPT against the
  analytic model's (`cost_model(gpt2-small, h100-sxm)`: the executor's models are fp32, so FLOPs at 50%
  of the H100's fp32 peak; TF32 and bf16 have no preset of their own), and the FLOP/s the GPU reached
  in each (the same analytic FLOP count over the measured time);
- peak memory per rank: the trace's count against the analytic model's prediction (`pipesim compare` of
  the run with `pipesim simulate --model ... --device h100-sxm --trace`).

A single-process step is the ranks' work one after the other, so its step time is not a pipeline's:
compare per-action costs and memory here, not step times. Writes the tables (Markdown) to --out/gpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from pipesim.cli import main as pipesim
from simulator.analytic import cost_model, stage_work
from simulator.presets import device, model
from traces.calibrate import calibrate
from traces.io import read_trace

KINDS = (("forward", "F"), ("backward", "B"), ("optimizer_step", "OPT"))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help="executor model preset (default gpt2-small)")
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--microbatch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--rounds", type=int, default=3, help="traced/untraced pairs per precision (default 3)"
    )
    parser.add_argument("--schedule", default="1f1b")
    parser.add_argument("--out", default="gpu-runs", help="folder for the runs and gpu.md")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a smoke run of this")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def run(args: argparse.Namespace, folder: Path, *, trace: bool) -> tuple[float, int, float]:
    """One single-process CUDA run: (median step seconds, allocator peak bytes, wall seconds)."""
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    argv = [
        "run", "--single-process", "--device", args.device, "--schedule", args.schedule,
        "--model", args.model, "--stages", str(args.stages), "--microbatches", str(args.microbatches),
        "--microbatch-size", str(args.microbatch_size), "--steps", str(args.steps), "--val-every", "0",
        "--out", str(folder),
    ]  # fmt: skip
    began = time.perf_counter()
    code = pipesim([*argv, *([] if trace else ["--no-trace"])])
    wall = time.perf_counter() - began
    if code:
        sys.exit(f"bench_gpu: pipesim {' '.join(argv)} exited {code}")
    return step_time(folder), torch.cuda.max_memory_allocated() if cuda else 0, wall


def step_time(folder: Path) -> float:
    """Median step time from metrics.jsonl (cumulative times), the first step dropped."""
    times = [json.loads(line)["time"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(steps) if steps else times[0]


def fitted(folder: Path) -> list[dict[str, float]]:
    """Per stage: the calibrated F, B, OPT seconds of the recorded run."""
    fit = calibrate(read_trace(folder / "trace.json"))
    return [
        {name: stage.times[name].seconds for name, _ in KINDS if name in stage.times} for stage in fit.stages
    ]


def predicted(args: argparse.Namespace, folder: Path) -> str:
    """Simulate the same configuration with the h100-sxm preset into a trace; `pipesim compare` output."""
    shape = ["--model", args.model, "--microbatch-size", str(args.microbatch_size)]
    common = ["--schedule", args.schedule, "-p", str(args.stages), "-m", str(args.microbatches)]
    prediction = folder / "h100-prediction.json"
    code, _ = quiet(["simulate", *common, *shape, "--device", "h100-sxm", "--trace", str(prediction)])
    if code:
        sys.exit("bench_gpu: pipesim simulate failed")
    return str(prediction)


def quiet(argv: list[str]) -> tuple[int, str]:
    """A pipesim command in this process, its stdout captured: (exit code, stdout)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = pipesim(argv)
    return code, buffer.getvalue()


def memory_table(args: argparse.Namespace, folder: Path, prediction: str) -> list[str]:
    _, text = quiet(["compare", str(folder / "trace.json"), prediction, "--json"])
    rows = ["| rank | measured peak (tensors) | h100-sxm preset | preset / measured |", "|---|---|---|---|"]
    for rank, cell in enumerate(json.loads(text)["peak_memory"]):
        ratio = f"{cell['b'] / cell['a']:.2f}" if cell["a"] else "-"
        rows.append(f"| {rank} | {cell['a'] / 2**20:.1f} MiB | {cell['b'] / 2**20:.1f} MiB | {ratio} |")
    return rows


def cost_table(args: argparse.Namespace, measured: dict[str, list[dict[str, float]]]) -> list[str]:
    spec = model(args.model, microbatch_size=args.microbatch_size)
    analytic = cost_model(spec, device("h100-sxm"), stages=args.stages).stages
    works = stage_work(spec, args.stages)
    precisions = list(measured)
    head = "| stage | action | h100-sxm preset | " + " | ".join(f"{p} measured (TFLOP/s)" for p in precisions)
    rows = [head + " |", "|---|---|---|" + "---|" * len(precisions)]
    for stage, (cost, work) in enumerate(zip(analytic, works, strict=True)):
        flops = {
            "forward": work.forward_flops,
            "backward": work.input_grad_flops + work.weight_grad_flops,
            "optimizer_step": None,
        }
        for name, label in KINDS:
            cells = []
            for precision in precisions:
                seconds = measured[precision][stage].get(name)
                rate = f" ({flops[name] / seconds / 1e12:.3g})" if seconds and flops[name] else ""
                cells.append(f"{seconds * 1e3:.3f} ms{rate}" if seconds is not None else "-")
            preset = getattr(cost, name)
            rows.append(f"| {stage} | {label} | {preset * 1e3:.3f} ms | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device is visible", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "a CPU"
    title = f"# {args.schedule}, {args.model}, P = {args.stages}, m = {args.microbatches}, "
    lines = [
        title + f"{args.microbatch_size} sequences per microbatch, {args.steps} steps on {name}",
        "",
        f"Step times: the median of each run, {args.rounds} alternating pairs per precision.",
        "",
    ]
    head = "| precision | steps, traced | steps, --no-trace | recording adds | allocator peak (traced) |"
    timing = [head, "|---|---|---|---|---|"]
    measured: dict[str, list[dict[str, float]]] = {}
    for precision in ("fp32", "tf32") if args.device == "cuda" else ("fp32",):
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        folder = out / f"{args.schedule}-{precision}"  # the last traced run: calibrated below
        steps: dict[bool, list[float]] = {True: [], False: []}
        peak = 0
        for round_ in range(args.rounds):
            for trace in (True, False) if round_ % 2 else (False, True):
                last = trace and round_ == args.rounds - 1
                other = out / f"{folder.name}-{'traced' if trace else 'bare'}{round_ + 1}"
                seconds, allocated, wall = run(args, folder if last else other, trace=trace)
                steps[trace].append(seconds)
                peak = allocated if trace else peak
                print(f"{precision} round {round_ + 1}: {'traced' if trace else 'bare'} step "
                      f"{seconds * 1e3:.1f} ms, run {wall:.1f} s", flush=True)  # fmt: skip
        measured[precision] = fitted(folder)
        adds = statistics.median(t / b for t, b in zip(steps[True], steps[False], strict=True)) - 1
        traced, bare = (", ".join(f"{t * 1e3:.1f}" for t in steps[key]) + " ms" for key in (True, False))
        cells = (traced, bare, f"{adds:+.1%}", f"{peak / 2**30:.2f} GiB" if peak else "-")
        timing.append(f"| {precision} | " + " | ".join(cells) + " |")
    prediction = predicted(args, out)
    lines += ["## Step time and recording", "", *timing, "",
              "## Per-action cost: calibrated from the run against the analytic preset", "",
              *cost_table(args, measured), "",
              "## Peak memory per rank (fp32 run)", "",
              *memory_table(args, out / f"{args.schedule}-fp32", prediction), ""]  # fmt: skip
    text = "\n".join(lines)
    (out / "gpu.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

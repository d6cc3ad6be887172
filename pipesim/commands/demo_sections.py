"""The demo's simulator and executor sections: predicted on a GPU preset, measured on this machine.

    pipesim demo        # prints these after the exact analytics (pipesim/commands/demo.py)

Both import their heavy packages (SimPy, torch) only when they render, so `pipesim --help` stays fast.
"""

from __future__ import annotations

PREDICT_SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1", "pipedream", "2bw", "amdp")
PREDICT_MODEL, PREDICT_DEVICE, PREDICT_RANKS, PREDICT_MICROBATCHES = "gpt2-small", "h100-sxm", 8, 32
MEASURE_SCHEDULES = ("1f1b", "2bw")
MEASURE_RANKS, MEASURE_MICROBATCHES, MEASURE_STEPS = 2, 8, 16
MEASURE_HIDDEN, MEASURE_SEQ_LEN = 128, 128
"""The tiny preset widened so compute, not message latency, dominates (as in benchmarks/)."""


def predicted() -> str:
    """Simulate every schedule on the analytic cost model of a transformer preset on a device preset."""
    from pipesim.commands.simulate import format_side_by_side
    from schedules.registry import build_with_defaults
    from simulator.request import CostRequest
    from simulator.simulation import simulate

    request = CostRequest(model=PREDICT_MODEL, device=PREDICT_DEVICE)
    results = []
    for name in PREDICT_SCHEDULES:
        schedule = build_with_defaults(name, PREDICT_RANKS, PREDICT_MICROBATCHES)
        simulation = simulate(schedule, request.costs_for(schedule), meta={"costs": request.label})
        results.append((simulation, simulation.metrics()))
    return format_side_by_side(results, request) + (
        f"\n(reproduce: pipesim simulate --schedule {','.join(PREDICT_SCHEDULES)} -p {PREDICT_RANKS} "
        f"-m {PREDICT_MICROBATCHES} --model {PREDICT_MODEL} --device {PREDICT_DEVICE})"
    )


def measured() -> str:
    """Train the tiny GPT for a few steps with each schedule on real ranks (torchrun, gloo)."""
    import io
    import itertools
    import json
    import statistics
    import tempfile
    from pathlib import Path

    from executor.run.launch import launch
    from executor.run.runconfig import RunConfig

    rows = [("schedule", "first loss", "last loss", "step time (median)", "tokens/s (median)")]
    with tempfile.TemporaryDirectory(prefix="pipesim-demo-") as folder:
        for name in MEASURE_SCHEDULES:
            config = RunConfig(
                schedule=name,
                stages=MEASURE_RANKS,
                microbatches=MEASURE_MICROBATCHES,
                steps=MEASURE_STEPS,
                hidden=MEASURE_HIDDEN,
                seq_len=MEASURE_SEQ_LEN,
                val_every=0,
                out=str(Path(folder) / name),
            )
            log = io.StringIO()
            if launch(config, err=log, out=io.StringIO()):
                return f"{name}: the run failed:\n{log.getvalue()}"
            lines = (Path(config.out) / "metrics.jsonl").read_text().splitlines()
            steps = [json.loads(line) for line in lines]
            times = [b["time"] - a["time"] for a, b in itertools.pairwise(steps)]
            rows.append(
                (
                    name,
                    f"{steps[0]['loss']:.4f}",
                    f"{steps[-1]['loss']:.4f}",
                    f"{statistics.median(times) * 1e3:.0f} ms",
                    f"{statistics.median(s['tokens_per_s'] for s in steps):,.0f}",
                )
            )
    from pipesim.commands.demo import align

    m, P, S = MEASURE_MICROBATCHES, MEASURE_RANKS, MEASURE_STEPS
    ideal = S * (m + P - 1) / (S * m + P - 1)  # 2BW fills and drains once per run, 1F1B once per step
    sizes = f"--stages {MEASURE_RANKS} --microbatches {MEASURE_MICROBATCHES} --steps {MEASURE_STEPS}"
    width = f"--hidden {MEASURE_HIDDEN} --seq-len {MEASURE_SEQ_LEN}"
    return align(rows) + (
        f"\nP = {MEASURE_RANKS} ranks (torchrun, gloo, one thread each), m = {MEASURE_MICROBATCHES}, "
        f"{MEASURE_STEPS} steps, the tiny GPT at {width}.\n"
        f"2BW's ideal gain over 1F1B in {S} steps is S(m+P-1)/(Sm+P-1) = {ideal:.3f} "
        f"((m+P-1)/m = {(m + P - 1) / m:.3f} in steady state).\n"
        f"(reproduce: pipesim run --schedule 2bw {sizes} {width})"
    )

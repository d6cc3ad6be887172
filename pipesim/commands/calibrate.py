"""`pipesim calibrate MEASURED -o costs.toml`: fit a cost file from a measured trace, and check it.

    pipesim calibrate runs/1f1b -o costs.toml                  # a run folder means its trace.json
    pipesim calibrate runs/1f1b -o costs.toml --report         # + the re-prediction against the run
    pipesim simulate --schedule 1f1b -p 2 -m 8 --steps 12 --costs costs.toml    # re-predict it yourself

The fit (traces/calibrate.py) takes per stage the forward, backward (or I and W) and optimizer-step times,
the host's time before each kind of action, and the per-message time of the link; the cost file's
comments say which steps were used, what was dropped and the spread of what was kept. It also says what
compute speed F and B reached and the efficiency a device preset would need to predict it (`--device`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipesim.commands.compare import format_comparison
from schedules.fileio import check_writable, write_atomic
from simulator.costfile import loads_costs
from simulator.presets import device as device_preset
from traces.calibrate import Calibration
from traces.compare import compare_traces
from traces.io import load_trace, write_trace
from traces.schema import Trace


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a cost file from a measured trace (and check the re-prediction against it)",
        description="Fit a cost file (docs/cost-model.md) from a measured trace or run folder.",
    )
    parser.add_argument("measured", metavar="MEASURED", help="a trace file or a run folder (its trace.json)")
    parser.add_argument("-o", "--out", required=True, metavar="FILE", help="the cost file to write (TOML)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="also simulate the same schedule with the fitted costs and compare it with the measurement",
    )
    parser.add_argument("--prediction", metavar="FILE", help="write the re-predicted trace here")
    parser.add_argument("--json", action="store_true", help="print the fit (and the report) as JSON")
    parser.add_argument(
        "--device",
        metavar="PRESET",
        help="the device preset to state the reached compute speed against (default: the run's own, cpu "
        "or its GPU's: h100-sxm for an H100 or H200, a100-80gb for an A100)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulator import calibration  # SimPy loads here, not when the CLI lists its commands

    out = check_writable(args.out)
    if args.device is not None:
        device_preset(args.device)  # an unknown name: one line naming the known ones, before any work
    if args.prediction:
        check_writable(args.prediction)
    measured = load_trace(args.measured)
    fit, text = fit_cost_file(measured, source=args.measured)
    report = None
    if args.report or args.prediction:
        costs = loads_costs(text, source=str(out))  # the file as written is what predictions use
        predicted = calibration.repredict(measured, costs, label=str(out))
        report = compare_traces(measured, predicted, labels=(args.measured, "calibrated prediction"))
        if args.prediction:
            write_trace(args.prediction, predicted)
    write_atomic(out, text)
    speed = calibration.achieved_flops(fit, measured, args.device)
    if args.json:
        data = {"costs": str(out), "fit": fit.to_dict(), "compute_speed": speed}
        if report is not None:
            data["report"] = report.to_dict()
        print(json.dumps(data, indent=2, allow_nan=False))
        return 0
    print(summary(fit, out))
    if speed is not None:
        print(speed_line(speed))
    if report is not None and args.report:
        print()
        print(format_comparison(report))
    return 0


def fit_cost_file(measured: Trace, *, source: str) -> tuple[Calibration, str]:
    """The fit of a measured trace and the text of its cost file."""
    from simulator.calibration import calibrate_trace  # loads SimPy: only when a command runs

    return calibrate_trace(measured, source=source)


def speed_line(speed: dict) -> str:
    """What F and B reached, and the efficiency the device preset would need (calibration.achieved_flops)."""
    line = (
        f"compute: {speed['flops_per_s'] / 1e9:.3g} GFLOP/s reached by F and B (the analytic FLOPs of the "
        "model the run trained)"
    )
    if "efficiency" not in speed:
        return line + "; no device preset for this run's device"
    return line + (
        f", efficiency {speed['efficiency']:.3f} of the {speed['device']} preset's {speed['dtype']} peak of "
        f"{speed['peak_flops'] / 1e9:.0f} GFLOP/s (the efficiency that preset would need for this run)"
    )


def summary(fit: Calibration, out: Path) -> str:
    """What was fitted, per stage, in milliseconds, and where it went."""
    names = ("forward", "backward", "optimizer_step", "host_forward", "host_backward", "host_send")
    rows = ["stage  " + "  ".join(f"{name:>14}" for name in names)]
    for stage in fit.stages:
        cells = []
        for name in names:
            estimate = stage.times.get(name)
            cells.append(f"{estimate.seconds * 1e3:11.3f} ms" if estimate else f"{'-':>14}")
        rows.append(f"{stage.entry:>5}  " + "  ".join(cells))
    latency = fit.link.latency
    link = f"link: {latency.seconds * 1e6:.1f} us per message" if latency else "link: not seen"
    notes = [f"note: {note}" for note in fit.notes]
    return "\n".join([f"wrote {out}", *rows, link + f" ({fit.link.note})", *notes])

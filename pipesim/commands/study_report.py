"""The outputs of `pipesim study`: results and summary tables, predicted times, plots, and what it prints.

    report(study, folder, lrs, args, ran)     # after every run of the grid has its file

Everything is recomputed from the run files on every invocation (cheap next to the runs), so a second
invocation rewrites the same tables; each file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from executor.study.analysis import COLUMNS, SUMMARY_COLUMNS, find_target, result_rows, summary_rows
from executor.study.figures import study_figures, write_figures
from executor.study.grid import StudyConfig, cells, runs, source
from executor.study.report import csv_text, markdown_table, summary_markdown
from executor.study.store import StudyFolder, read_json, write_json
from pipesim.commands.study_tasks import predicted_step_times, timing_name
from schedules.fileio import write_atomic


def report(study: StudyConfig, folder: StudyFolder, lrs: dict[str, float], args, ran: int) -> None:
    records = {cell.name: folder.read_run(folder.run_path(source(study, cell).name)) for cell in cells(study)}
    target = find_target(study, records)
    step_times = predicted_step_times(
        study, model=args.predict_model, device=args.predict_device, devices=args.predict_devices
    )
    cpu = {key: value["step_time_s"] for key, value in cpu_timings(study, folder).items()}
    rows = result_rows(study, records, lrs, target, step_times, cpu)
    summary = summary_rows(rows, study.reference)
    write_atomic(folder.path / "results.csv", csv_text(rows, COLUMNS))
    write_atomic(
        folder.path / "results.md", "# Study results, one row per run\n\n" + markdown_table(rows, COLUMNS)
    )
    write_atomic(folder.path / "summary.csv", csv_text(summary, SUMMARY_COLUMNS))
    text = summary_markdown(
        header=header_lines(study, args, target.value, target.how),
        lr_rows=lr_rows(folder, lrs),
        step_rows=step_rows(study, step_times, cpu_timings(study, folder), args),
        summary=summary,
        depths=study.depths,
    )
    write_atomic(folder.path / "summary.md", text)
    write_json(folder.predicted, predicted_record(step_times, args))
    figures = study_figures(study, records, summary, step_times, machine(args))
    notes = write_figures(figures, folder.plots, png=not args.no_png, plotly_js=args.plotly_js)
    print_report(study, folder, summary, target.value, ran, notes)


def machine(args: argparse.Namespace) -> str:
    return f"{args.predict_model} on {args.predict_devices} x {args.predict_device}"


def cpu_timings(study: StudyConfig, folder: StudyFolder) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(schedule, variant, P) -> its timing file, where there is one."""
    found = {}
    for cell in cells(study):
        path = folder.timing_path(timing_name(cell))
        if path.exists():
            found[(cell.schedule, cell.variant, cell.stages)] = read_json(path)
    return found


def predicted_record(step_times: dict[tuple[str, int, str], float], args) -> dict[str, Any]:
    return {
        "model": args.predict_model,
        "device": args.predict_device,
        "devices": args.predict_devices,
        "step_time_s": {f"{s}-p{p}-{v}": t for (s, p, v), t in sorted(step_times.items())},
    }


def header_lines(study: StudyConfig, args, target: float, how: str) -> list[str]:
    tokens = study.microbatches * study.microbatch_size * _seq_len(study)
    return [
        f"Settings: preset `{args.preset}`; schedules {', '.join(study.schedules)} (the first is the "
        f"reference); optimizers {', '.join(study.variants)}; P = {', '.join(map(str, study.depths))}; "
        f"seeds {', '.join(map(str, study.seeds))}; {study.steps} steps of m = {study.microbatches} "
        f"microbatches of {study.microbatch_size} sequences ({tokens} tokens per step, the same batches "
        f"for every schedule); model `{study.model}` with {study.layers} layers.",
        "",
        f"Equal tokens: PipeDream updates once per microbatch ({study.microbatches} updates per step, each "
        "from one microbatch); the others once per step. PipeDream's lr rules: `per-update` uses the "
        f"reference's lr for every update, `per-token` lr / {study.microbatches} (the same lr per token). "
        "Warm-up, cosine decay and PipeMare's T_c are counted in steps and converted to updates.",
        "",
        f"Target validation loss: {target:.4f} ({how}).",
        "",
        "Gap: final validation loss minus the reference's with the same base optimizer, depth and seed "
        "(paired: the same batches and initial weights). Seed spread: the standard deviation of the gap "
        "over seeds; a mean gap within it reads `no gap`. Steps and times to target: means over the "
        "seeds that reached it.",
        "",
        f"Time to target = steps to target x step time: predicted by the simulator for {machine(args)} "
        f"({args.predict_devices} / P data-parallel copies of the P-stage pipeline, m = "
        f"{study.microbatches}); " + _cpu_words(study),
    ]


def _cpu_words(study: StudyConfig) -> str:
    if not study.timing_steps:
        return "not timed on this CPU (--timing-steps 0)."
    return (
        f"on this CPU from costs fitted to a short single-process run of each schedule "
        f"({study.timing_steps} steps), simulated with one core per rank."
    )


def _seq_len(study: StudyConfig) -> int:
    from executor.training.model import model_config

    overrides = {"seq_len": study.seq_len} if study.seq_len else {}
    return model_config(study.model, **overrides).seq_len


def lr_rows(folder: StudyFolder, lrs: dict[str, float]) -> list[dict[str, Any]]:
    saved = read_json(folder.lrs)
    rows = []
    for name, lr in lrs.items():
        tried = saved["tried"].get(name, {})
        shown = ", ".join(f"{k}: {'-' if v is None else f'{v:.4f}'}" for k, v in tried.items())
        rows.append({"optimizer": name, "lr": lr, "tried": shown or "given (--lr)"})
    return rows


def step_rows(study: StudyConfig, step_times, timings, args) -> list[dict[str, Any]]:
    """Per schedule and depth, with the first variant: predicted, this CPU, serial (one core)."""
    variant, rows = study.variants[0], []
    for schedule in study.schedules:
        for stages in study.depths:
            timing = timings.get((schedule, variant, stages), {})
            rows.append(
                {
                    "schedule": schedule,
                    "P": stages,
                    "optimizer": variant,
                    f"predicted, {machine(args)}": _seconds(step_times.get((schedule, stages, variant))),
                    "this CPU, one core per rank": _seconds(timing.get("step_time_s")),
                    "this CPU, serial": _seconds(timing.get("serial_step_time_s")),
                }
            )
    return rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def print_report(study, folder, summary, target: float, ran: int, notes: list[str]) -> None:
    total, shared = len(runs(study)), len(cells(study)) - len(runs(study))
    print(
        f"study: {total} runs in {folder.path} ({ran} tasks ran now, the rest were done before; "
        f"{shared} cells share a depth-free run)"
    )
    print(f"target validation loss {target:.4f}; gap to {study.reference} (mean over seeds, verdict):")
    for stages in study.depths:
        print(f"  P = {stages}")
        for row in summary:
            if row["stages"] == stages and row["schedule"] != study.reference:
                rule = f" [{row['lr_rule']}]" if row["lr_rule"] != "both" else ""
                scale = f" lr x {row['lr_scale']:.3g}" if row["lr_scale"] != 1.0 else ""
                gap = "-" if row["gap_mean"] is None else f"{row['gap_mean']:+.4f}"
                name = f"{row['schedule']}{rule} {row['optimizer']}{scale}"
                print(f"    {name:<44} {gap:>8}  {row['verdict']}")
    print(f"wrote {folder.path}/results.csv, results.md, summary.csv, summary.md, plots/")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

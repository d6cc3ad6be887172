"""How fast the dashboard redraws: a real browser changes m on the Explore page and waits for the timeline.

    python benchmarks/bench_dashboard.py              # P = 8, m = 32 and P = 32, m = 256 (1F1B and 2BW)
    python benchmarks/bench_dashboard.py --quick      # P = 8, m = 32 only

Starts `pipesim dashboard` on a free loopback port and drives Debian's Chromium through Playwright
(apt-get install -y chromium). For each case it types a new m into the page and times until the
timeline in the browser shows it: "new" is an m not seen before (simulate, metrics, figures, transfer,
drawing), "cached" an m shown before (Streamlit's caches answer; transfer and drawing remain). It also
times the figure function alone. Medians over --repeats; the issue asks for well under a second at
P = 8, m = 32 and a usable page at P = 32, m = 256.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlencode

CASES = (
    ("1f1b", 8, 32, "gpt2-small"),
    ("1f1b", 32, 256, "gpt3-6.7b"),
    ("2bw", 32, 256, "gpt3-6.7b"),
)
META = """() => {
    const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => p.layout && p.layout.meta);
    return plot ? plot.layout.meta.actions : null;
}"""


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runs = tempfile.mkdtemp(prefix="pipesim-bench-")
    command = [sys.executable, "-m", "pipesim", "dashboard", "--port", str(port), "--runs", runs]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the dashboard did not start")


def redraw(page, microbatches: int) -> float:
    """Seconds from pressing Enter on a new m to the timeline drawn with it."""
    before = page.evaluate(META)
    box = page.get_by_label("m (microbatches)")
    box.fill(str(microbatches))
    started = time.perf_counter()
    box.press("Enter")
    page.wait_for_function(
        f"() => {{ const n = ({META})(); return n !== null && n !== {json.dumps(before)}; }}", timeout=120_000
    )
    elapsed = time.perf_counter() - started
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000
    )
    return elapsed


def bench_case(page, base: str, case: tuple, repeats: int) -> dict:
    schedule, ranks, microbatches, model = case
    query = {
        "schedules": schedule,
        "p": ranks,
        "m": microbatches - repeats - 1,
        "costs": "presets",
        "model": model,
    }
    page.goto(f"{base}/?{urlencode(query)}")
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
    new, cached = [], []
    values = [microbatches - index for index in range(repeats)]
    for value in values:  # each m for the first time
        new.append(redraw(page, value))
    for _ in range(repeats):  # back and forth between two m values already shown
        cached.append(redraw(page, values[0]))
        cached.append(redraw(page, values[1]))
    return {
        "new": statistics.median(new),
        "cached": statistics.median(cached),
        "actions": page.evaluate(META),
    }


def figure_seconds(case: tuple) -> float:
    from dashboard.figures.timeline import timeline_figure
    from schedules.registry import build_with_defaults
    from simulator import simulate
    from simulator.request import CostRequest

    schedule_name, ranks, microbatches, model = case
    schedule = build_with_defaults(schedule_name, ranks, microbatches)
    trace = simulate(schedule, CostRequest(model=model, device="h100-sxm").costs_for(schedule)).trace()
    started = time.perf_counter()
    timeline_figure(trace).to_json()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="P = 8, m = 32 only")
    parser.add_argument("--repeats", type=int, default=3, help="redraws per measurement (median)")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    cases = CASES[:1] if args.quick else CASES
    server, base = start_server()
    rows = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            for case in cases:
                result = bench_case(page, base, case, max(2, args.repeats))
                rows.append((case, result, figure_seconds(case)))
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
    print(f"{'case':<22} {'actions':>8} {'new m':>8} {'cached m':>9} {'figure alone':>13}")
    for (schedule, ranks, microbatches, _), result, figure in rows:
        name = f"{schedule} P={ranks} m={microbatches}"
        times = f"{result['new']:>7.2f}s {result['cached']:>8.2f}s {figure:>12.2f}s"
        print(f"{name:<22} {result['actions']:>8,} {times}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

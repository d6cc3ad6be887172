"""A real browser against a real `pipesim dashboard`: Chromium driven by Playwright.

.venv/bin/python -m pytest -q -m browser tests/dashboard/test_browser.py
PIPESIM_SCREENSHOTS=docs .venv/bin/python -m pytest -q -m browser tests/dashboard/test_browser.py

Needs Debian's Chromium (`apt-get install -y chromium`; .ci/run installs it): Playwright is given its
path and downloads nothing. The server runs on a free loopback port over a copy of the test run folders
and the project's recordings (traces/recorded/, when there are any). Every page is saved as a small PNG
in the test's folder, and into docs/ (what README.md shows) when PIPESIM_SCREENSHOTS=docs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from dashboard.inputs import trace_from_bytes
from schedules.csv_io import export_csv
from schedules.registry import build_with_defaults
from simulator import simulate
from simulator.request import CostRequest
from tests.dashboard.conftest import DATA
from tests.dashboard.studydata import write_study
from tests.dashboard.test_command import free_port, wait_healthy
from traces.io import dumps_trace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOT_COLOURS = 96  # a palette PNG: small enough to commit, still crisp
TIMELINE = """() => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')];
    const plot = plots.find(p => p.layout && p.layout.meta && p.layout.meta.rows);
    return plot ? JSON.stringify(plot.layout.meta) : null;
}"""


def recording_labels() -> tuple[str, str]:
    """A and B of a recording: the project's first (traces/recorded/NAME), else the test data's."""
    for measured in sorted((ROOT / "traces" / "recorded").glob("*/measured.json")):
        if (measured.parent / "predicted.json").is_file():
            return (
                f"recorded/{measured.parent.name}/measured.json",
                f"recorded/{measured.parent.name}/predicted.json",
            )
    return "recording/measured.json", "recording/predicted.json"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory):
    """`pipesim dashboard` on a free port, run from a folder holding `runs/` (a copy of the test runs, and
    a synthetic study under runs/studies/)."""
    home = tmp_path_factory.mktemp("dashboard")
    shutil.copytree(DATA, home / "runs")
    write_study(home / "runs" / "studies" / "synthetic")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipesim", "dashboard", "--port", str(port), "--runs", "runs"],
        cwd=home,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_healthy(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(base_url: str):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no chromium on PATH: apt-get install -y chromium (README.md, Development)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport=VIEWPORT)
        browser.close()


def open_page(page, url: str, *, charts: bool = True) -> None:
    """Load a page and wait until its script has finished (and its charts are drawn)."""
    page.goto(url)
    page.wait_for_selector(".js-plotly-plot" if charts else "h1", timeout=60_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )


def timeline(page) -> dict:
    found = page.evaluate(TIMELINE)
    assert found, "no timeline on the page"
    return json.loads(found)


def screenshot(page, name: str, folder: Path) -> None:
    """Save the page as a small palette PNG in `folder`, check it, and copy it into docs/ when
    PIPESIM_SCREENSHOTS=docs."""
    from PIL import Image

    page.wait_for_timeout(800)  # let plotly finish its transitions
    path = folder / f"dashboard-{name}.png"
    page.screenshot(path=str(path))
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=SCREENSHOT_COLOURS).save(path, optimize=True)
    with Image.open(path) as image:
        assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
        assert len(image.getcolors(SCREENSHOT_COLOURS)) > 8  # not a blank page
    assert path.stat().st_size < 150_000
    if os.environ.get("PIPESIM_SCREENSHOTS") == "docs":
        shutil.copyfile(path, ROOT / "docs" / path.name)


def test_explore_redraws_the_timeline_when_p_changes(page, base_url: str, tmp_path: Path) -> None:
    open_page(page, f"{base_url}/?{urlencode({'schedules': '1f1b,zb-h1', 'p': 4, 'm': 8})}")
    assert timeline(page)["rows"] == [[f"rank {rank}" for rank in range(4)]]
    screenshot(page, "explore", tmp_path)
    box = page.get_by_label("P (stages)")
    box.fill("6")
    box.press("Enter")
    page.wait_for_function(f"() => ({TIMELINE})()?.includes('rank 5')", timeout=30_000)
    assert timeline(page)["rows"] == [[f"rank {rank}" for rank in range(6)]]
    assert "p=6" in page.url


def test_explore_downloads_what_the_commands_write(page, base_url: str) -> None:
    open_page(page, f"{base_url}/?{urlencode({'schedules': '2bw', 'p': 3, 'm': 6})}")
    files = {}
    for label in ("PyTorch schedule CSV", "trace (pipesim JSON)", "Chrome / Perfetto trace"):
        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name=label).click()
        files[download.value.suggested_filename] = Path(download.value.path()).read_bytes()
    schedule = build_with_defaults("2bw", 3, 6)
    assert files["2bw.csv"].decode() == export_csv(schedule).text
    expected = simulate(schedule, CostRequest().costs_for(schedule), meta={"costs": "unit"}).trace()
    assert files["2bw.trace.json"].decode() == dumps_trace(expected)  # byte for byte
    assert trace_from_bytes(files["2bw.trace.json"], name="2bw.trace.json").schedule.steps == 4
    assert json.loads(files["2bw.chrome.json"])["otherData"] == {"source": "simulated", "schedule": "2bw"}


def test_compare_shows_two_recorded_traces_and_one_error_for_a_bad_upload(
    page, base_url: str, tmp_path: Path
) -> None:
    a, b = recording_labels()
    open_page(page, f"{base_url}/compare?{urlencode({'a': a, 'b': b})}")
    page.get_by_text("verdict:", exact=False).first.wait_for()
    assert len(timeline(page)["rows"]) == 2  # A above B on one time axis
    screenshot(page, "compare", tmp_path)

    open_page(page, f"{base_url}/compare?{urlencode({'a': a, 'b': '(upload a file)'})}", charts=False)
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "bad.json", "mimeType": "application/json", "buffer": b'{"format": "pipesim-tr'}]
    )
    error = page.locator('[data-testid="stAlertContentError"]')
    error.first.wait_for(timeout=30_000)
    assert error.count() == 1
    assert error.inner_text().startswith("bad.json: not JSON") and "truncated?" in error.inner_text()
    assert page.get_by_role("heading", name="Compare").is_visible()


def test_runs_and_sweep_draw(page, base_url: str, tmp_path: Path) -> None:
    open_page(page, f"{base_url}/runs")
    page.get_by_text("loss (solid) and validation loss (dashed)").first.wait_for()
    screenshot(page, "runs", tmp_path)
    open_page(page, f"{base_url}/sweep")
    assert (
        page.locator(".js-plotly-plot .heatmaplayer").count() >= 1 or page.locator(".js-plotly-plot").count()
    )
    screenshot(page, "sweep", tmp_path)


def test_study_draws_its_summary_and_plots(page, base_url: str, tmp_path: Path) -> None:
    open_page(page, f"{base_url}/study?{urlencode({'study': 'studies/synthetic', 'depths': 4})}")
    page.get_by_text("Target validation loss 2.7005").first.wait_for()
    assert page.locator(".js-plotly-plot").count() >= 1
    screenshot(page, "study", tmp_path)

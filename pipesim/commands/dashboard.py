"""`pipesim dashboard`: the Streamlit dashboard (dashboard/app.py) on this machine, until Ctrl-C.

    pipesim dashboard                          # http://127.0.0.1:8501
    pipesim dashboard --port 8600 --runs runs  # run folders for the Runs and Compare pages

Streamlit listens on 127.0.0.1 only, with its usage statistics off, no browser opened and no file
watcher; the runs folder travels to the app in the PIPESIM_RUNS environment variable. Ctrl-C stops the
server and returns 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dashboard.rundirs import RUNS_VARIABLE  # Streamlit-free: the command stays quick to load
from pipesim.errors import UsageError

HOST = "127.0.0.1"
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
STOP_SECONDS = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="open the dashboard in a browser: explore, compare, runs, sweep (Streamlit, 127.0.0.1)",
        description="Start the Streamlit dashboard on 127.0.0.1 and print its address; Ctrl-C stops it.",
    )
    parser.add_argument("--port", type=int, default=8501, help="TCP port on 127.0.0.1 (default 8501)")
    parser.add_argument(
        "--runs",
        metavar="DIR",
        default="runs",
        help="folder of run folders (pipesim run --out DIR/NAME) for the Runs and Compare pages; "
        "only read (default: runs)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    runs = Path(args.runs).expanduser()  # as given: the server runs in this folder too
    check(args.port, runs)
    command = streamlit_command(args.port)
    env = {**os.environ, RUNS_VARIABLE: str(runs)}
    print(f"pipesim dashboard: http://{HOST}:{args.port}  (runs: {runs}; Ctrl-C stops it)", flush=True)
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    stop = Stop(server)
    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = stop.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stop.requested is not None:
        print("pipesim dashboard: stopped", flush=True)
        return 0
    if code != 0:
        print(f"pipesim dashboard: streamlit exited with code {code}", file=sys.stderr)
    return code


def check(port: int, runs: Path) -> None:
    """One-line errors for a port that is out of range or taken, and a runs path that is a file."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: not a TCP port (1-65535)")
    if runs.exists() and not runs.is_dir():
        raise UsageError(f"--runs {runs}: not a folder")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a port that
        try:  # only lingers after a closed connection is free
            probe.bind((HOST, port))
        except OSError:
            raise UsageError(
                f"--port {port}: already in use on {HOST} (choose another with --port)"
            ) from None


def streamlit_command(port: int) -> list[str]:
    """`streamlit run dashboard/app.py` with the dashboard's server settings."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        HOST,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--logger.level",
        "warning",
    ]


class Stop:
    """Ctrl-C or SIGTERM: note it and ask the server to stop (SIGINT; a Ctrl-C typed in a terminal has
    reached it already), then wait for it, killing it after STOP_SECONDS. The handler only takes note:
    raising from it lost the race with a server that stopped first (the command then returned without
    saying it had been stopped)."""

    def __init__(self, server: subprocess.Popen) -> None:
        self.server = server
        self.requested: float | None = None
        """When the first stop signal came (time.monotonic), or None."""

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested is None:
            self.requested = time.monotonic()
            if self.server.poll() is None:
                self.server.send_signal(signal.SIGINT)

    def wait(self) -> int:
        """The server's exit code, once it has exited (killed if it outlives a stop by STOP_SECONDS)."""
        while True:
            try:
                return self.server.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                if self.requested is not None and time.monotonic() - self.requested > STOP_SECONDS:
                    self.server.kill()

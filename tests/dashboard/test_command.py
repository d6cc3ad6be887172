"""`pipesim dashboard`: its one-line errors, and a real server that Ctrl-C stops cleanly.

.venv/bin/python -m pytest -q tests/dashboard/test_command.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipesim.cli import main
from pipesim.commands.dashboard import streamlit_command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(port: int, server: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no dashboard on port {port} after {seconds} s")


def test_bad_ports_and_runs_are_one_line_errors(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "runs.txt"
    a_file.write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            ("--port", "0"): "--port 0: not a TCP port (1-65535)",
            ("--port", str(port)): f"--port {port}: already in use on 127.0.0.1",
            ("--runs", str(a_file)): f"--runs {a_file}: not a folder",
        }
        for flags, message in cases.items():
            assert main(["dashboard", *flags]) == 2
            error = capsys.readouterr().err
            assert error.startswith(f"pipesim: error: {message}") and error.count("\n") == 1


def test_the_server_is_local_quiet_and_private() -> None:
    command = streamlit_command(8600)
    settings = dict(zip(command[5::2], command[6::2], strict=True))
    assert settings["--server.address"] == "127.0.0.1" and settings["--server.port"] == "8600"
    assert settings["--browser.gatherUsageStats"] == "false" and settings["--server.headless"] == "true"


@pytest.mark.slow
def test_it_serves_the_app_and_ctrl_c_stops_it_cleanly(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipesim", "dashboard", "--port", str(port), "--runs", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job is
    )
    try:
        wait_healthy(port, server)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        os.killpg(server.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, err
    assert out.splitlines() == [
        f"pipesim dashboard: http://127.0.0.1:{port}  (runs: {tmp_path}; Ctrl-C stops it)",
        "pipesim dashboard: stopped",
    ]
    assert "Traceback" not in err

"""Imports flow one way: schedules <- traces <- {simulator, executor} <- dashboard, pipesim.

.venv/bin/pytest tests/test_import_direction.py -q

Importing schedules or traces (every module under them) must not load torch, simpy or streamlit, and the
simulator and the executor never import each other (checked on the source with ast, so it holds for
code paths no test runs).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "simpy", "streamlit")

PROBE = """
import importlib, json, pkgutil, sys
import schedules, traces, traces.io
names = []
for package in (schedules, traces):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
        names.append(module.name)
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {heavy!r})
print(json.dumps({{"modules": names, "heavy": heavy}}))
"""


def test_schedules_and_traces_import_no_heavy_packages() -> None:
    probe = PROBE.format(heavy=set(HEAVY))
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "schedules.graph" in report["modules"] and "traces.io" in report["modules"]
    assert report["heavy"] == [], f"importing schedules/traces loaded {report['heavy']}"


def imported_packages(path: Path) -> set[str]:
    """Top-level package names a source file imports (absolute imports only; relative ones stay inside)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def offenders(package: str, forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {sorted(imported_packages(path) & forbidden)}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported_packages(path) & forbidden
    ]


def test_simulator_never_imports_executor() -> None:
    assert offenders("simulator", {"executor", "dashboard", "pipesim"}) == []


def test_executor_never_imports_simulator() -> None:
    assert offenders("executor", {"simulator", "dashboard", "pipesim"}) == []


def test_schedules_and_traces_import_only_downstream_free_code() -> None:
    upper = {"simulator", "executor", "dashboard", "pipesim", *HEAVY}
    assert offenders("schedules", upper | {"traces"}) == []
    assert offenders("traces", upper) == []


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "import os\nimport executor.stage as s\nfrom simulator.engine import run\nfrom . import x\n"
    )
    assert imported_packages(source) == {"os", "executor", "simulator"}

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


EXECUTOR_ROOMS = ["training", "interpreter", "run", "study"]
"""executor's rooms (sub-packages), each importing only from itself and the rooms before it."""


def executor_imports(path: Path) -> set[str]:
    """The executor modules a source file imports (dotted names, wherever the import statement is), with
    every name imported from one: callers keep those that are modules."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("executor."))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("executor")
        ):
            found.add(node.module)  # and what it imports from it, which may be a module, or not
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_executor_rooms_import_one_way() -> None:
    wrong = []
    for rank, room in enumerate(EXECUTOR_ROOMS):
        for path in sorted((ROOT / "executor" / room).rglob("*.py")):
            for module in executor_imports(path):
                other = [*module.split("."), ""][1]
                if other in EXECUTOR_ROOMS and EXECUTOR_ROOMS.index(other) > rank:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_executor_modules_import_no_circle() -> None:
    """No two executor modules import each other, however indirectly (a circle is two files that are one
    idea split badly, or a third file missing)."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / "executor").rglob("*.py")
    }
    graph = {
        name: {m for m in executor_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    done: set[str] = set()

    def circle_from(name: str, trail: list[str]) -> list[str]:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done:
            return []
        for target in sorted(graph[name]):
            found = circle_from(target, [*trail, name])
            if found:
                return found
        done.add(name)
        return []

    assert [circle for name in sorted(graph) if (circle := circle_from(name, []))] == []

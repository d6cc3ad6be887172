"""The documentation is executable: its TOML blocks load and its `pipesim` commands run.

    .venv/bin/pytest tests/test_docs.py

The rule, for README.md, traces/README.md and every docs/*.md (a page added later is picked up):

- A *command* is a line of a fenced code block (``` ... ```) that starts with `pipesim ` (leading spaces
  allowed), joined with the lines after it while a line ends in a backslash. `#` starts a comment; no
  other shell syntax (pipes, redirections, variables) is understood.
- The commands of one page run in their order, in one fresh temporary folder (so a file that one
  command writes is there for the next), through `pipesim.cli.main`, and each must exit 0. An argument
  that is a path (with a /) of the repository (simulator/presets/example.toml, traces/recorded) and of
  nothing in the temporary folder gets the checkout's path.
- Shortening, so that the whole file stays within about a minute: `pipesim run` runs at most
  `--steps 2` (added when absent), and on the CPU: `--device cuda` becomes `--device cpu` (the GPU path
  has its own `gpu` tests; a documented 8-GPU run must not depend on the machine the suite runs on).
  `pipesim demo` (tested in tests/pipesim), and a command whose comment says `not run by the docs test`
  (a `--resume` that needs a run stopped midway), are only parsed: their flags must still exist.
- Every ```` ```toml ```` block is written to a file and must load with simulator.costfile.load_costs.

README.md's Development section states the same rule. Alongside: the documented example cost file is
simulator/presets/example.toml byte for byte, every long flag of every command is documented, and no
file cites the design notes outside the repository ("SPEC section N").
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipesim.cli import build_parser, main
from pipesim.errors import UsageError
from simulator.costfile import load_costs

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "traces" / "README.md", *(ROOT / "docs").glob("*.md")],
    key=lambda path: str(path.relative_to(ROOT)),
)
PARSE_ONLY_MARK = "not run by the docs test"
"""In a command's comment: parse it (its flags must exist) but do not run it."""
MAX_RUN_STEPS = 2
"""`pipesim run` trains at most this many steps here."""
FENCE = re.compile(r"^\s*```")


@dataclass(frozen=True, kw_only=True)
class Block:
    """A fenced code block of a markdown page."""

    language: str
    """The info string after the opening fence ('toml', '' ...)."""
    line: int
    """1-based line number of its first content line."""
    lines: tuple[str, ...]
    """Its content, one entry per line."""


@dataclass(frozen=True, kw_only=True)
class Command:
    """One `pipesim` command of a page."""

    argv: tuple[str, ...]
    """The arguments after `pipesim`, as the shell would split them."""
    line: int
    """1-based line number where it starts."""
    parse_only: bool
    """True for `pipesim demo` and for a command whose comment carries PARSE_ONLY_MARK."""


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced code block, in order (an unclosed last block runs to the end)."""
    blocks, current, start, language = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            if current is None:
                current, start, language = [], number + 1, line.strip()[3:].strip()
            else:
                blocks.append(Block(language=language, line=start, lines=tuple(current)))
                current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        blocks.append(Block(language=language, line=start, lines=tuple(current)))
    return blocks


def commands(text: str) -> list[Command]:
    """Every `pipesim ...` command in the fenced blocks of a page, continuation lines joined."""
    found = []
    for block in fenced_blocks(text):
        index = 0
        while index < len(block.lines):
            line, start = block.lines[index], block.line + index
            index += 1
            if not line.lstrip().startswith("pipesim "):
                continue
            while line.rstrip().endswith("\\") and index < len(block.lines):
                line = line.rstrip()[:-1] + " " + block.lines[index].strip()
                index += 1
            argv = tuple(shlex.split(line, comments=True))[1:]
            comment = line.split("#", 1)[1] if "#" in line else ""
            parse_only = PARSE_ONLY_MARK in comment or argv[:1] == ("demo",)
            found.append(Command(argv=argv, line=start, parse_only=parse_only))
    return found


def shortened(argv: tuple[str, ...]) -> list[str]:
    """The command as the test runs it: `pipesim run` capped at MAX_RUN_STEPS, on the CPU."""
    args = list(argv)
    if args[:1] != ["run"] or "--resume" in args:
        return args
    if "--steps" in args:
        at = args.index("--steps") + 1
        args[at] = str(min(int(args[at]), MAX_RUN_STEPS))
    else:
        args += ["--steps", str(MAX_RUN_STEPS)]
    if "--device" in args and args[args.index("--device") + 1] == "cuda":
        args[args.index("--device") + 1] = "cpu"
    return args


def with_repository_paths(args: list[str], folder: Path) -> list[str]:
    """Arguments that are paths (with a /) of the repository, and of nothing in `folder`, get the
    checkout's path."""
    return [
        str(ROOT / arg) if "/" in arg and not (folder / arg).exists() and (ROOT / arg).exists() else arg
        for arg in args
    ]


def _marks(path: Path) -> list[pytest.MarkDecorator]:
    """`slow` for a page that trains; `distributed` too when it starts ranks through torchrun."""
    runs = [
        c for c in commands(path.read_text(encoding="utf-8")) if c.argv[:1] == ("run",) and not c.parse_only
    ]
    if not runs:
        return []
    torchrun = any("--single-process" not in c.argv and "--prepare" not in c.argv for c in runs)
    return [pytest.mark.slow, *([pytest.mark.distributed] if torchrun else [])]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


PAGES = [pytest.param(path, marks=_marks(path), id=_name(path)) for path in DOCUMENTS]


# --- the extraction rule itself ---------------------------------------------------------------------

SAMPLE = """Text with `pipesim simulate` inline is prose, not a command.

```
pipesim schedules show 1f1b -p 4 -m 8      # a comment
  pipesim simulate --schedule 2bw \\
      -p 8 -m 32
torchrun -m executor.worker --run-dir x
pipesim run --resume runs/a                 # (not run by the docs test: needs a stopped run)
pipesim demo
```

```toml
optimizer = "sgd"
```
"""


def test_the_extraction_rule_finds_fenced_commands_and_joins_continuations() -> None:
    found = commands(SAMPLE)
    assert [c.argv for c in found] == [
        ("schedules", "show", "1f1b", "-p", "4", "-m", "8"),
        ("simulate", "--schedule", "2bw", "-p", "8", "-m", "32"),
        ("run", "--resume", "runs/a"),
        ("demo",),
    ]
    assert [c.line for c in found] == [4, 5, 8, 9]
    assert [c.parse_only for c in found] == [False, False, True, True]
    assert [(b.language, b.lines) for b in fenced_blocks(SAMPLE)][1] == ("toml", ('optimizer = "sgd"',))


def test_shortening_caps_run_steps_and_leaves_other_commands_alone() -> None:
    assert shortened(("run", "--steps", "50", "--device", "cuda")) == [
        "run", "--steps", "2", "--device", "cpu",
    ]  # fmt: skip
    assert shortened(("run", "--schedule", "1f1b")) == ["run", "--schedule", "1f1b", "--steps", "2"]
    assert shortened(("run", "--steps", "1")) == ["run", "--steps", "1"]
    assert shortened(("simulate", "--steps", "9", "--device", "cuda")) == [
        "simulate",
        "--steps",
        "9",
        "--device",
        "cuda",
    ]


def test_every_page_has_something_to_check() -> None:
    # README and the schedules page must keep runnable examples; a page with none is fine elsewhere.
    readme = commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {c.argv[0] for c in readme} >= {"schedules", "simulate", "sweep", "run"}
    assert commands((ROOT / "docs" / "schedules.md").read_text(encoding="utf-8"))


# --- the pages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_toml_block_loads(path: Path, tmp_path: Path) -> None:
    for block in fenced_blocks(path.read_text(encoding="utf-8")):
        if block.language == "toml":
            costs_file = tmp_path / f"line{block.line}.toml"
            costs_file.write_text("\n".join(block.lines) + "\n", encoding="utf-8")
            load_costs(costs_file)  # a CostError names the field


def test_the_documented_cost_file_is_the_example_file() -> None:
    blocks = fenced_blocks((ROOT / "docs" / "cost-model.md").read_text(encoding="utf-8"))
    documented = ["\n".join(block.lines) + "\n" for block in blocks if block.language == "toml"]
    example = (ROOT / "simulator" / "presets" / "example.toml").read_text(encoding="utf-8")
    assert example in documented


@pytest.mark.parametrize("path", PAGES)
def test_every_command_runs(path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for command in commands(path.read_text(encoding="utf-8")):
        where = f"{_name(path)}:{command.line}: pipesim {' '.join(command.argv)}"
        if command.parse_only:
            try:
                build_parser().parse_args(list(command.argv))
            except UsageError as error:
                pytest.fail(f"{where}\ndoes not parse: {error}")
            continue
        code = main(with_repository_paths(shortened(command.argv), tmp_path))
        out, err = capsys.readouterr()
        assert code == 0, f"{where}\nexit {code}\n{err[-2000:]}\n{out[-2000:]}"


# --- flags and citations ---------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser, name: str = "pipesim"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _parsers(subparser, f"{name} {sub}")


def test_every_flag_that_help_lists_is_documented() -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in DOCUMENTS)
    missing = [
        f"{name} {flag}"
        for name, parser in _parsers(build_parser())
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)
    ]
    assert not missing, f"flags in --help but not in README.md or docs/: {missing}"


def test_nothing_cites_design_notes_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pattern = re.compile(r"SPEC (section|§)|shared/SPEC")
    citing = [
        name
        for name in tracked
        if name != "tests/test_docs.py" and pattern.search((ROOT / name).read_text(encoding="utf-8"))
    ]
    assert not citing, f"cite docs/schedules.md or docs/optimizers.md instead: {citing}"

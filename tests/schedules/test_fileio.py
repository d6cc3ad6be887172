"""schedules.fileio.write_atomic: all or nothing, an ordinary file mode, no temporary files left."""

from __future__ import annotations

import os

import pytest

from schedules.fileio import write_atomic


def test_write_creates_folders_and_leaves_only_the_target(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    write_atomic(target, "one\n")
    write_atomic(target, "two\n")  # replaces
    assert target.read_text() == "two\n"
    assert os.listdir(target.parent) == ["out.txt"]


def test_mode_follows_the_umask_not_mkstemp(tmp_path) -> None:
    # mkstemp creates 0600 files; a run folder's files should be readable like any other file.
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path) -> None:
    target = tmp_path / "keep.txt"
    write_atomic(target, "old")

    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type] - not text: the write fails midway
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]

"""File helpers: atomic writes, staged folders, byte-capped copies."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from services.files import CHUNK, ByteBudget, OverLimit, copy_capped, staged_folder, write_atomic


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_write_atomic_replaces_whole_files_with_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    write_atomic(target, b"first")
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.read_bytes() == b"first" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    write_atomic(target, b"second", mode=0o600, sync=True)
    assert target.read_bytes() == b"second" and target.stat().st_mode & 0o777 == 0o600
    assert listing(tmp_path) == ["a", "a/b", "a/b/file.json"]  # no temporary file left


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["file"]


def test_staged_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "target"

    def fill(staging: Path) -> int:
        (staging / "a.txt").write_text("a")
        assert not target.exists() and staging.parent == target.parent
        return 7

    assert staged_folder(target, fill) == 7
    assert listing(tmp_path) == ["new", "new/deeper", "new/deeper/target", "new/deeper/target/a.txt"]

    def replace(staging: Path) -> None:
        (staging / "b.txt").write_text("b")

    with pytest.raises(OSError):
        staged_folder(target, replace)  # a folder with files is in the way
    staged_folder(target, replace, replace=True)
    assert listing(target) == ["b.txt"]

    def fail(staging: Path) -> None:
        (staging / "half.txt").write_text("x")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        staged_folder(tmp_path / "other" / "target", fail)
    assert listing(tmp_path) == ["new", "new/deeper", "new/deeper/target", "new/deeper/target/b.txt"]


def test_copy_capped_counts_real_bytes_against_every_budget() -> None:
    out = io.BytesIO()
    total = ByteBudget(3 * CHUNK)
    assert copy_capped(io.BytesIO(b"x" * (CHUNK + 5)).read, out, ByteBudget(2 * CHUNK), total) == CHUNK + 5
    assert out.getvalue() == b"x" * (CHUNK + 5) and total.used == CHUNK + 5
    this_file = ByteBudget(CHUNK + 10)
    out = io.BytesIO()
    with pytest.raises(OverLimit) as raised:  # over both: the first budget given is the one named
        copy_capped(io.BytesIO(b"y" * 3 * CHUNK).read, out, this_file, total)
    assert raised.value.budget is this_file and out.getvalue() == b"y" * CHUNK  # the chunk over it is not written
    with pytest.raises(OverLimit) as raised:
        copy_capped(io.BytesIO(b"z" * CHUNK).read, io.BytesIO(), ByteBudget(2 * CHUNK), total)
    assert raised.value.budget is total and "more than 3,145,728 bytes" in str(raised.value)

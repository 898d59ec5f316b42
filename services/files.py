"""Small file helpers, standard library only (cheap to import on the client side too): an atomic
file write, a folder filled out of sight and then put in place, and a stream copy that counts real
bytes against limits."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")
CHUNK = 1024 * 1024


def write_atomic(path: Path, data: bytes, mode: int | None = None, *, sync: bool = False) -> None:
    """Write via a temporary file beside `path` and a rename, so a crash never leaves half a file.

    `mode`: the file's permission bits (0o600 for a credential), set before a byte is written;
    None gives what a new file gets (0o666 less the umask). `sync`: the data reaches the disk
    before the rename (for a small file that names others, so a power cut cannot leave it empty).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.chmod(tmp, mode)  # the exact bits, whatever the umask
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staged_folder(target: Path, fill: Callable[[Path], T], *, replace: bool = False) -> T:
    """Run `fill(staging)` on a hidden folder beside `target`, then rename it to `target`: the
    folder appears whole or not at all. With `replace`, a folder already at `target` is removed
    just before the rename (without, the rename fails unless that folder is empty). On any error
    the staging folder goes, and so do the parent folders this call created. Returns what `fill`
    returned."""
    target = Path(target)
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        result = fill(staging)
        if replace and target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first: leave no trace
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return result


@dataclass
class ByteBudget:
    """Bytes counted against a limit, over as many copies as share the budget."""

    limit: int
    used: int = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise OverLimit(self)


class OverLimit(Exception):
    """A copy went over a ByteBudget's limit; `budget` is the one it went over."""

    def __init__(self, budget: ByteBudget):
        super().__init__(f"more than {budget.limit:,} bytes")
        self.budget = budget


def copy_capped(read: Callable[[int], bytes], out: BinaryIO, *budgets: ByteBudget) -> int:
    """Copy `read(CHUNK)` to `out` until it returns nothing, counting the bytes really read (not what
    a header declares): a chunk that takes a budget over its limit raises OverLimit for the first
    such budget, in the order given, before that chunk is written. Returns the bytes copied."""
    copied = 0
    while chunk := read(CHUNK):
        for budget in budgets:
            budget.take(len(chunk))
        out.write(chunk)
        copied += len(chunk)
    return copied


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(row: dict[str, object]) -> dict[str, object]:
    """A report row for a CSV a person may open in a spreadsheet: a text cell that would start a
    formula (`=cmd|…`) gets a leading quote, as OWASP advises; other values are left as they are."""
    return {k: f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA_STARTS) else v for k, v in row.items()}

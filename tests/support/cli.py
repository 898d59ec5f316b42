"""The `shoplens` command run inside the test process, for tests whose subject is what the command
does rather than how a process starts and ends: each run in a subprocess paid two to eight
seconds of imports (torch, open_clip) before it did anything.

Tests of exit codes as a shell sees them, of kills and of signals keep real subprocesses."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from cli.main import main


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def shoplens(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`shoplens ARGS` with exactly `env` as its environment, its output captured as a
    subprocess's would be (the same result type, so a test reads it the same way)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        _environment(env),
        contextlib.chdir(cwd or Path.cwd()),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(list(args))
    return subprocess.CompletedProcess(["shoplens", *args], code, out.getvalue(), err.getvalue())

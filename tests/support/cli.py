"""The `shoplens` command run inside the test process, for tests whose subject is what the command
does rather than how a process starts and ends: each run in a subprocess paid two to eight
seconds of imports (torch, open_clip) before it did anything.

Tests of exit codes as a shell sees them, of kills and of signals keep real subprocesses."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import warnings
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


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """`main` sets up logging as a process of its own would (the root logger's level, quieter
    third-party loggers, warnings as log records); the test process gets its own setup back."""
    loggers = [
        logging.getLogger(),
        *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    levels = {logger: logger.level for logger in loggers}
    handlers = list(logging.getLogger().handlers)
    showwarning = warnings.showwarning
    try:
        yield
    finally:
        for logger in logging.root.manager.loggerDict.values():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(logger, logging.NOTSET))
        logging.getLogger().setLevel(levels[logging.getLogger()])
        logging.getLogger().handlers[:] = handlers
        logging.captureWarnings(False)  # forgets the hook `main` installed…
        warnings.showwarning = showwarning  # …and puts back the one the test had


def shoplens(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`shoplens ARGS` with exactly `env` as its environment, its output captured as a
    subprocess's would be (the same result type, so a test reads it the same way)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        _environment(env),
        _logging_restored(),
        contextlib.chdir(cwd or Path.cwd()),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(list(args))
    return subprocess.CompletedProcess(["shoplens", *args], code, out.getvalue(), err.getvalue())

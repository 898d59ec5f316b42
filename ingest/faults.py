"""Crash points for the crash-safety tests: `SHOPLENS_CRASH_AT=name[:n]` kills the process with
SIGKILL the n-th time (default: the first) the pipeline reaches checkpoint `name`. Unset in
production, where a checkpoint costs a string comparison.
"""

from __future__ import annotations

import os
import signal
from functools import lru_cache

from services.settings import get_settings

_hits: dict[str, int] = {}


@lru_cache(maxsize=1)
def _target() -> tuple[str, int]:
    name, _, count = get_settings().crash_at.partition(":")
    return name, int(count or 1)


def checkpoint(name: str) -> None:
    target, count = _target()
    if target and name == target:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == count:
            os.kill(os.getpid(), signal.SIGKILL)

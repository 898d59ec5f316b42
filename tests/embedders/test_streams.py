"""Large batches shared out to single-threaded streams (services/embedders/streams.py)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from services.embedders.streams import CHUNKS_PER_STREAM, MIN_PER_STREAM, Streams


def test_a_batch_is_shared_out_across_the_streams_and_comes_back_in_order() -> None:
    streams = Streams(2, "test-stream")
    both_in = threading.Barrier(2, timeout=30)  # each stream waits until the other runs too
    seen: list[tuple[str, int]] = []

    def run(chunk: Sequence[int]) -> np.ndarray:
        name = threading.current_thread().name
        if not any(thread == name for thread, _ in seen):
            seen.append((name, len(chunk)))
            both_in.wait()
        return np.array([[value, value * 10] for value in chunk])

    items = list(range(37))
    out = streams.map(run, items)
    np.testing.assert_array_equal(out, [[v, v * 10] for v in items])
    assert len({thread for thread, _ in seen}) == 2
    assert all(thread.startswith("test-stream") for thread, _ in seen)
    assert max(size for _, size in seen) == -(-37 // (2 * CHUNKS_PER_STREAM))  # chunks, not halves


def test_a_failing_chunk_fails_the_batch() -> None:
    def run(chunk: Sequence[int]) -> np.ndarray:
        if 5 in chunk:
            raise ValueError("chunk with 5")
        return np.zeros((len(chunk), 1))

    with pytest.raises(ValueError, match="chunk with 5"):
        Streams(2, "test-stream").map(run, list(range(16)))


def test_only_batches_large_enough_are_shared_out() -> None:
    assert Streams(2, "s").wanted(2 * MIN_PER_STREAM)
    assert not Streams(2, "s").wanted(2 * MIN_PER_STREAM - 1)  # a shopper's query: the runtime's own threads
    assert not Streams(1, "s").wanted(1000)


def _double(chunk: Sequence[int]) -> np.ndarray:
    return np.asarray(chunk)[:, None] * 2


def _in_child(streams: Streams, queue: multiprocessing.Queue) -> None:
    queue.put(streams.map(_double, list(range(20))).ravel().tolist())


def test_a_forked_child_gets_streams_of_its_own() -> None:
    """A child forked after the first batch inherits the pool but not its threads: waiting on them
    would hang, so the child starts its own."""
    streams = Streams(2, "test-stream")
    streams.map(_double, list(range(20)))  # the parent's threads exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(streams, queue))
    child.start()
    try:
        assert queue.get(timeout=60) == [2 * v for v in range(20)]
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()

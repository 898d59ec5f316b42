"""Part servers: the processes that open, search and close the built parts of the embedded store.

What a shopper must never notice: a part server that dies, a part handed over while a search is on
its way, a parent that goes away. Each with a real engine in real child processes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from services.vectors.base import IMAGE, PointData, PointFilter, VectorStoreUnavailable
from services.vectors.edge import EdgeBackend, EdgeTuning, close_shards
from services.vectors.edge_parts import EdgeParts
from services.vectors.part_server import server_pids

DIM = 16
# 64 photos of 16 floats a part; each part's graph is built when it fills
TUNING = EdgeTuning(indexing_threshold_kb=2, full_scan_threshold_kb=1, precision="float32", part_kb=4)


def photos(n: int, seed: int = 0) -> list[PointData]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        PointData(f"00000000-0000-4000-8000-{i:012d}", IMAGE, vectors[i], {"sku": f"S{i}", "kind": IMAGE, "price": 1.0})
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    backend = EdgeParts(tmp_path, "p", TUNING)
    backend.ensure({IMAGE: DIM})
    yield backend
    close_shards()


def test_the_serving_process_never_opens_the_engine(store: EdgeParts) -> None:
    points = photos(180)  # parts of 64, 64 and 52
    store.upsert(points)
    build = store.build_index()  # the tail's
    assert build is not None and build.vectors == 52 and build.held == {}
    assert [p.shard.engine for p in store._parts()] == [None, None, None]
    assert len(server_pids()) == 3
    with pytest.raises(VectorStoreUnavailable, match="served by its part server"):
        EdgeBackend(store.root, "p", TUNING).count()  # one folder, one opener
    assert store.search(points[0].vector, IMAGE, PointFilter(), 1)[0].point_id == points[0].id


def test_a_dead_part_server_is_started_again_and_loses_nothing(store: EdgeParts) -> None:
    points = photos(150)
    store.upsert(points)
    first = store._parts()[0]
    first.upsert([dataclasses.replace(points[3], payload={**points[3].payload, "price": 9.0})])  # acknowledged
    os.kill(first.server.process.pid, signal.SIGKILL)
    first.server.process.wait()
    hit = store.search(points[3].vector, IMAGE, PointFilter(), 1)[0]  # answered by a fresh server
    assert hit.point_id == points[3].id and hit.payload["price"] == 9.0
    assert store.count() == 150


def test_a_part_server_that_dies_during_a_request_is_a_clear_error_then_comes_back(store: EdgeParts) -> None:
    points = photos(70)
    store.upsert(points)
    part = store._parts()[0]
    answer = part.start("count", None)
    os.kill(part.server.process.pid, signal.SIGKILL)
    try:
        answer()  # either it answered before the kill, or it is a clear error
    except VectorStoreUnavailable as exc:
        assert "stopped" in str(exc)
    assert store.count() == 70


def test_a_part_server_answers_only_what_a_part_does(store: EdgeParts) -> None:
    store.upsert(photos(70))
    part = store._parts()[0]
    with pytest.raises(ValueError, match="does not answer 'drop'"):
        part.start("drop")()
    assert store.count() == 70


def test_a_part_that_cannot_be_opened_says_so_and_the_live_version_stays(store: EdgeParts) -> None:
    store.upsert(photos(70))
    part = store._parts()[0]
    live = part.shard.live()
    assert live is not None
    close_shards()
    for segment in live.rglob("*"):  # every file of the built version garbled
        if segment.is_file() and segment.stat().st_size:
            segment.write_bytes(b"\x00garbage" * 8)
    again = EdgeParts(store.root, "p", TUNING)
    with pytest.raises(VectorStoreUnavailable, match="cannot open the vector part"):
        again.count()
    assert again._parts()[0].shard.live() == live


def _gone_parent(tmp_path: Path, body: str) -> tuple[list[int], str]:
    """Run `body` in a parent that prints its part servers' pids and exits without any clean-up;
    the pids and everything written to stderr (its servers' too) once they have all ended."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_part_server import TUNING, photos
        from services.vectors.edge_parts import EdgeParts
        from services.vectors.part_server import server_pids
        from services.vectors.base import IMAGE
        store = EdgeParts(Path({str(tmp_path)!r}), "p", TUNING)
        """
    )
    tail = 'print(" ".join(map(str, server_pids())), flush=True)\nos._exit(0)\n'
    done = subprocess.run(
        [sys.executable, "-c", script + textwrap.dedent(body) + tail],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )  # returns once the servers, which share its stderr, have closed it
    return [int(p) for p in done.stdout.split()], done.stderr


def test_part_servers_end_with_the_process_that_started_them(tmp_path: Path) -> None:
    pids, _ = _gone_parent(tmp_path, f"store.ensure({{IMAGE: {DIM}}})\nstore.upsert(photos(150))\n")
    assert len(pids) == 3
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
    again = EdgeParts(tmp_path, "p", TUNING)  # and the folders are free again
    assert server_pids() == []  # a part's server starts at its first request
    assert again.count() == 150
    assert len(server_pids()) == 3
    close_shards()
    assert server_pids() == []


def test_a_parent_gone_before_its_part_opened_leaves_no_error(tmp_path: Path) -> None:
    """The server finds nobody to tell that it opened: it closes the part and ends, quietly."""
    store = EdgeParts(tmp_path, "p", TUNING)
    store.ensure({IMAGE: DIM})
    store.upsert(photos(150))
    close_shards()
    pids, stderr = _gone_parent(tmp_path, 'store._parts()[0].start("count")\n')
    assert len(pids) == 1
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    again = EdgeParts(tmp_path, "p", TUNING)
    assert again.count() == 150
    close_shards()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_a_part_that_cannot_be_asked_leaves_the_others_free(tmp_path: Path) -> None:
    """A search started on the first parts, then failed on a later one: the first parts' answers
    are collected, so their servers answer the next request instead of waiting forever."""
    store = EdgeParts(tmp_path, "p", TUNING)
    store.ensure({IMAGE: DIM})
    points = photos(150)  # parts of 64, 64 and 22
    store.upsert(points)
    close_shards()
    reopened = EdgeParts(tmp_path, "p", TUNING)
    shutil.rmtree(tmp_path / "p@2")  # gone after the store found it: its part cannot be asked
    with pytest.raises(VectorStoreUnavailable, match="no vector shard"):
        reopened.search(points[0].vector, IMAGE, PointFilter(), 1)
    first = reopened._parts()[0]
    done: list[int] = []
    asking = threading.Thread(target=lambda: done.append(first.count()), daemon=True)
    asking.start()
    asking.join(60)
    assert done == [64]
    close_shards()

"""A part of an embedded collection, served by a process of its own.

Why: the engine holds the GIL while it opens a shard (250-320 ms for a built part of 100k photos,
a third of it loading the in-memory price index), closes one (up to 300 ms for a part just
written) and flushes one, so in the process that answers shoppers each part's index build ended
in such a freeze. So every part is opened, written, searched, flushed and closed only by its part
server, a child process started with the parent's interpreter; the parent sends it requests over
a socket pair and waits for the answer with the GIL released. A search asks every part at once,
so parts answer on all cores.

The parent keeps the folder's lock, its versions (CURRENT) and the index builds: it copies the
part, a child builds the copy's graph, a new part server opens the built copy while the old one
answers, and the old one closes in its own process once the new one has taken over. A part server
stops when its parent does (its end of the socket closes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from services.vectors.base import Hit, IndexBuild, PointData, PointFilter, Record, VectorBackend, VectorStoreUnavailable
from services.vectors.edge import WRITE_BATCH, EdgeBackend, EdgeTuning, Shard, built_copy, paged

log = logging.getLogger(__name__)

# what a parent may ask of a part server: EdgeBackend's methods
_METHODS = frozenset(
    {
        "ensure",
        "upsert",
        "overwrite_payloads",
        "delete_where",
        "delete_ids",
        "retrieve",
        "holding",
        "search",
        "search_batch",
        "lexical_search",
        "facet",
        "scroll_page",
        "count",
        "unindexed_kb",
        "flush",
    }
)
_STOP = "stop"


class _Server:
    """One part server process and the parent's end of its socket pair."""

    def __init__(self, folder: Path, tuning: EdgeTuning, version: Path | None = None):
        """Serve `version` of the shard folder, or its live version (none yet: made on `ensure`)."""
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.vectors.part_server",
                    str(theirs.fileno()),
                    str(folder),
                    str(version or ""),
                    json.dumps(dataclasses.asdict(tuning)),
                ],
                pass_fds=[theirs.fileno()],
            )
        self.conn = Connection(ours.detach())
        self.folder = folder
        self.opened = False

    def wait_open(self) -> None:
        """Until the server has opened its version (raises what opening raised)."""
        if not self.opened:
            self.reply()
            self.opened = True

    def reply(self) -> Any:
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            code = self.process.wait()
            raise VectorStoreUnavailable(
                f"the part server of {self.folder.name} stopped (exit code {code}); the next request starts it again"
            ) from None
        if status == "error":
            raise value
        return value

    def stop(self) -> None:
        """Close the part (the engine flushes it) and end the process."""
        try:
            self.wait_open()
            self.conn.send((_STOP, ()))
            self.reply()
        except (VectorStoreUnavailable, OSError):
            pass
        finally:
            self.conn.close()
            self.process.wait()


_servers: set[_Server] = set()  # every live part server of this process (the bench adds up their memory)


def server_pids() -> list[int]:
    return [s.process.pid for s in list(_servers) if s.process.poll() is None]


def _start(folder: Path, tuning: EdgeTuning, version: Path | None = None) -> _Server:
    server = _Server(folder, tuning, version)
    _servers.add(server)
    return server


def _end(server: _Server) -> None:
    server.stop()
    _servers.discard(server)


class ServedPart(VectorBackend):
    """One part of a collection, served by its part server (the methods of EdgeBackend)."""

    name = "edge"

    def __init__(self, shard: Shard, tuning: EdgeTuning):
        self.shard, self.tuning = shard, tuning
        self.lock = threading.Lock()  # one request at a time on the socket, from send to reply
        self.server: _Server | None = None
        shard.served = self  # its server starts at the first request (a search starts every part's at once)

    def _spawn(self) -> _Server:
        self.shard.claim()
        self.shard.served = self
        if self.server is not None:
            _servers.discard(self.server)
        self.server = _start(self.shard.root, self.tuning)
        return self.server

    @property
    def is_embedded(self) -> bool:
        return True

    # -- requests -------------------------------------------------------------------------
    def start(self, method: str, *args: Any) -> Callable[[], Any]:
        """Send a request and return what waits for its answer: ask every part, then collect."""
        self.lock.acquire()
        try:
            server = self.server
            if server is None or server.process.poll() is not None:
                if server is None and method != "ensure" and self.shard.live() is None:
                    raise VectorStoreUnavailable(f"no vector shard at {self.shard.root}")
                if server is not None and self.shard.served is self:
                    log.warning("the part server of %s had stopped; starting it again", self.shard.root.name)
                server = self._spawn()  # a new part, or one whose server died or was stopped
            server.conn.send((method, args))  # read once it has opened: parts starting together open together
        except BaseException:
            self.lock.release()
            raise

        def answer() -> Any:
            try:
                server.wait_open()
                return server.reply()
            finally:
                self.lock.release()

        return answer

    def _ask(self, method: str, *args: Any) -> Any:
        return self.start(method, *args)()

    def _write(self, method: str, *args: Any) -> None:
        with self.shard.write_gate:
            self._ask(method, *args)

    # -- lifecycle ------------------------------------------------------------------------
    def ensure(self, dims: dict[str, int]) -> None:
        self._write("ensure", dims)

    def exists(self) -> bool:
        return self.shard.root.exists()

    def drop(self) -> None:
        with self.shard.write_gate:
            self.shard.close()  # stops the server and gives up the folder
            shutil.rmtree(self.shard.root, ignore_errors=True)

    def close(self) -> None:
        self._ask("flush")

    def stop(self) -> None:
        with self.lock:
            if self.server is not None:
                _end(self.server)

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        for start in range(0, len(points), WRITE_BATCH):  # searches get in between, as between engine calls
            self._write("upsert", list(points[start : start + WRITE_BATCH]))

    def overwrite_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        items = list(payloads.items())
        for start in range(0, len(items), WRITE_BATCH):
            self._write("overwrite_payloads", dict(items[start : start + WRITE_BATCH]))

    def delete_where(self, flt: PointFilter, keep_ids: Collection[str] = ()) -> None:
        self._write("delete_where", flt, list(keep_ids))

    def delete_ids(self, ids: Sequence[str]) -> None:
        self._write("delete_ids", list(ids))

    # -- reads ----------------------------------------------------------------------------
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        return self._ask("retrieve", list(ids), with_vectors)

    def holding(self, ids: Sequence[str]) -> set[str]:
        return self._ask("holding", list(ids))

    def search(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        return self._ask("search", vector, using, flt, limit)

    def search_batch(
        self, vectors: Sequence[np.ndarray], using: str, flts: Sequence[PointFilter], limit: int
    ) -> list[list[Hit]]:
        return self._ask("search_batch", list(vectors), using, list(flts), limit)

    def lexical_search(self, text: str, flt: PointFilter, limit: int) -> list[Hit]:
        return self._ask("lexical_search", text, flt, limit)

    def facet(self, key: str, flt: PointFilter | None, limit: int) -> list[tuple[str, int]]:
        return self._ask("facet", key, flt, limit)

    def scroll(self, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]:
        return paged(self.scroll_page, flt, with_vectors)

    def scroll_page(self, flt: PointFilter | None, with_vectors: bool, offset: Any) -> tuple[list[Record], Any]:
        return self._ask("scroll_page", flt, with_vectors, offset)

    def count(self, flt: PointFilter | None = None) -> int:
        return self._ask("count", flt)

    # -- index ----------------------------------------------------------------------------
    def unindexed_kb(self) -> float:
        return self._ask("unindexed_kb")

    def build_index(self) -> IndexBuild | None:
        """Index what was written since the last build: a child process builds a copy, a new
        part server opens it and takes over, and the old one, which answered until then, closes.
        Writes wait; nothing here holds the GIL."""
        if self.unindexed_kb() < self.tuning.indexing_threshold_kb:
            return None
        started = time.perf_counter()
        with self.shard.write_gate:
            self._ask("flush")
            vectors = self.count(PointFilter())
            source = self.shard.live()
            fresh = _opened(self.shard, self.tuning)
            paused = time.perf_counter()
            with self.lock:
                previous, self.server = self.server, fresh
            pause_ms = (time.perf_counter() - paused) * 1000
            if previous is not None:
                _end(previous)  # it closes its version in its own process
            if source is not None:
                shutil.rmtree(source, ignore_errors=True)
        return IndexBuild(vectors, time.perf_counter() - started, pause_ms, {})


def _opened(shard: Shard, tuning: EdgeTuning) -> _Server:
    """A part server on a built copy of the shard's live version, opened, and that copy made live."""
    target = built_copy(shard)
    server = _start(shard.root, tuning, target)
    try:
        server.wait_open()
    except BaseException:
        _end(server)
        shutil.rmtree(target, ignore_errors=True)
        raise
    shard.set_live(target)  # durable (an fsync): a crash from here on opens the built copy
    return server


# -- the part server process ---------------------------------------------------------------
def _send(conn: Connection, status: str, value: Any) -> bool:
    """Answer the parent; False when it is gone (it exited or closed its end: nothing to say)."""
    try:
        conn.send((status, value))
    except OSError:
        return False
    except Exception as exc:  # an answer or error that does not pickle: say what it was
        try:
            conn.send(("error", RuntimeError(f"{type(value).__name__}: {value}; not sent: {exc}")))
        except OSError:
            return False
    return True


def main(fd: int, folder: str, version: str, tuning_json: str) -> None:
    """Open the part (`version`, else its live version, else none until `ensure` makes one), then
    answer requests until told to stop or the parent goes away."""
    import qdrant_edge as qe

    logging.basicConfig(level=logging.WARNING, format="part server %(process)d: %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    conn = Connection(fd)
    Shard.agent = True
    root = Path(folder)
    backend = EdgeBackend(root.parent, root.name, EdgeTuning(**json.loads(tuning_json)))
    try:
        if version:
            backend.shard.engine = qe.EdgeShard.load(version)
        elif backend.shard.live() is not None:
            backend._engine()
    except Exception as exc:
        _send(conn, "error", VectorStoreUnavailable(f"cannot open the vector part {version or folder}: {exc}"))
        return
    answered = _send(conn, "ok", os.getpid())
    while answered:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):  # the parent went away
            break
        if method == _STOP:
            break
        if method not in _METHODS:
            answered = _send(conn, "error", ValueError(f"a part server does not answer {method!r}"))
            continue
        try:
            result = getattr(backend, method)(*args)
        except Exception as exc:
            answered = _send(conn, "error", exc)
        else:
            answered = _send(conn, "ok", result)
    backend.shard.close()
    _send(conn, "ok", None)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])

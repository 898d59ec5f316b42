"""The embedded default: Qdrant's own engine (qdrant-edge-py), one shard folder per collection
part (`edge_parts.py` keeps a collection as parts of bounded size, each opened by its part server,
`part_server.py`, which runs an EdgeBackend on it).

Why this shape:
- Writes land in an appendable segment that is searched by a plain scan, so new products are
  searchable at once. The HNSW graph is built when a part fills and after a bulk load
  (`build_index`), not per point.
- The engine holds the GIL while it optimizes, which would stall every search for the whole
  build. So the build runs in a child process on a copy of the live version; searches go on
  against the live version, writes wait, and the built version is opened beside it and
  switched in (a reference and the CURRENT file): searches pause for microseconds.
- Vectors are stored at half precision (float16; `EdgeTuning.precision`): half the memory and
  disk of float32 for the same recall@10, measured in BENCHMARKS.md. int8 scalar quantization
  was measured too: it keeps the float32 originals beside the int8 copy, so its disk is 1.6×
  the raw vectors, and opening a shard takes twice as long.
- A shard folder admits one process; inside a process every user shares one open shard.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from filelock import FileLock, Timeout

from services.files import write_atomic
from services.vectors.base import (
    BOOL_FIELDS,
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    LEXICAL,
    TEXT,
    Clause,
    Hit,
    IndexBuild,
    PointData,
    PointFilter,
    Record,
    VectorBackend,
    VectorStoreUnavailable,
    record,
    translate,
)

log = logging.getLogger(__name__)
# Points per engine write call. A search waits for the write in progress (the engine holds the GIL,
# and a part server answers one request at a time): 1,024 points took ~260 ms on a loaded 2-core
# machine, so search p99 during a bulk load was about that (256: 109 ms); 128 keeps it near 30 ms.
WRITE_BATCH = 128
# Unflushed points after which a write flushes. The engine holds the GIL while it flushes (about
# 20 ms plus 5 ms per thousand points), so a flush now and then keeps each pause short, and the
# flush an index build starts with has little left to do; flushing every batch would double the
# cost of a bulk load.
_FLUSH_EVERY = 16_384
# The Python binding turns MatchValue(True) into the integer 1, which never matches a JSON bool,
# so each bool field is also stored as a keyword ("true"/"false") under this prefix and
# filtered on that; readers never see it.
_SHADOW = "_kw_"


# Payload fields only text points carry. A photo space leaves their indexes out: each index of each
# segment keeps its own preallocated files (the word index 34 MB) and is read when a part opens.
TEXT_ONLY = (LEXICAL, "codes")

_DATATYPES = {"float16": qe.VectorStorageDatatype.Float16, "float32": qe.VectorStorageDatatype.Float32}


def _stored(payload: dict[str, Any]) -> dict[str, Any]:
    shadow = {
        f"{_SHADOW}{k}": ("true" if payload[k] else "false") for k in BOOL_FIELDS if isinstance(payload.get(k), bool)
    }
    return {**payload, **shadow} if shadow else payload


def _payload_indexes() -> dict[str, qe.KeywordIndexParams | qe.FloatIndexParams | qe.TextIndexParams]:
    """Every filterable field gets an index; only category and brand get extra graph links.

    Extra links per value keep a filtered graph search connected for mid-selective filters
    (a brand). A sku or a narrow category is answered from the payload index by an exact scan
    of its few points, `kind` and stock pass most points, and a price range has no values to
    link by; their links would cost build time and buy nothing.

    Opening a shard reads every in-memory index while holding the GIL, and an index build ends by
    opening the built shard in the serving process. So the indexes a filter needs only to look
    values up in (sku, codes, words, kind, a narrow category) stay on disk (`Cold`), read through
    the page cache, and those the graph search checks point by point under a broad filter
    (brand, price, stock) stay in memory: on disk they made those searches 2-3× slower. At 300k
    points this opens in 0.76 s, against 1.16 s with every index in memory (measured in-process).
    """
    cold = qe.Memory.Cold
    on_disk = {"sku", "codes", "kind", "category"}
    linked = {"category", "brand"}
    indexes: dict[str, qe.KeywordIndexParams | qe.FloatIndexParams | qe.TextIndexParams] = {
        key: qe.KeywordIndexParams(enable_hnsw=key in linked, memory=cold if key in on_disk else None)
        for key in KEYWORD_FIELDS
    }
    indexes.update({key: qe.FloatIndexParams(enable_hnsw=False) for key in FLOAT_FIELDS})
    indexes.update({f"{_SHADOW}{key}": qe.KeywordIndexParams(enable_hnsw=False) for key in BOOL_FIELDS})
    # the word tokenizer both backends rank with (services/lexical.py); BM25 scoring on
    indexes[LEXICAL] = qe.TextIndexParams(scoring=True, enable_hnsw=False, memory=cold)
    return indexes


def _visible(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if not k.startswith(_SHADOW)}


def _hit_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if not k.startswith(_SHADOW) and k != LEXICAL}


@dataclass(frozen=True)
class EdgeTuning:
    m: int = 16
    ef_construct: int = 100
    ef_search: int = 128
    indexing_threshold_kb: int = 10_000  # an unindexed segment above this gets an HNSW graph
    full_scan_threshold_kb: int = 10_000  # below this (or a filter this selective) an exact scan is faster
    precision: str = "float16"  # of stored vectors, fixed when a shard is made (float16 or float32)
    # vectors (as float32) a part of a collection takes before it is indexed and a new one started
    # (edge_parts.py): 100k photos of 512 floats. Opening or closing a part holds the GIL for a
    # time in proportion to it; each search asks every part.
    part_kb: int = 204_800


class Shard:
    """One open shard, shared by every backend object of this process.

    Layout: `<collection>/CURRENT` names the live version folder (`v1`, `v2`, …); an index build
    fills the next version and switches CURRENT atomically. A process holds `<collection>/.lock`
    while the shard is open, so a second process is refused before it touches anything. Once a
    part server serves the shard (`served`), this process keeps the lock and the versions and
    never opens the engine here again.
    """

    agent = False  # set in a part server: its parent process holds the folder and its versions

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.RLock()  # every call into the engine (it holds the GIL anyway)
        self.write_gate = threading.Lock()  # writers; held by an index build from copy to swap
        self.engine: qe.EdgeShard | None = None
        self.served: Any = None  # the part server's handle once this shard is served by one (part_server.py)
        self.unflushed = 0  # points written since the last flush
        self._owner: FileLock | None = None

    def live(self) -> Path | None:
        current = self.root / "CURRENT"
        return self.root / current.read_text().strip() if current.exists() else None

    def set_live(self, folder: Path) -> None:
        write_atomic(self.root / "CURRENT", folder.name.encode(), sync=True)

    def next_version(self) -> Path:
        live = self.live()
        return self.root / f"v{int(live.name[1:]) + 1 if live else 1}"

    def claim(self) -> None:
        """Take the folder for this process and clear what a build cut short left behind."""
        if self._owner is not None:
            return
        self._take_folder()
        live = self.live()
        for leftover in self.root.glob("v*"):  # a build cut short, or a version swapped out
            if leftover.is_dir() and leftover != live:
                shutil.rmtree(leftover, ignore_errors=True)

    def open(self, config: qe.EdgeConfig | None) -> qe.EdgeShard:
        if self.engine is not None:
            return self.engine
        if self.served is not None:
            raise VectorStoreUnavailable(f"the vector part at {self.root} is served by its part server")
        if config is None and self.live() is None:
            raise VectorStoreUnavailable(f"no vector shard at {self.root}")
        if not self.agent:  # a part server's parent holds the folder for it
            self.claim()
        try:
            live = self.live()
            if live is not None:
                self.engine = qe.EdgeShard.load(str(live))
            else:
                if config is None:
                    raise ValueError("a new shard needs its configuration")
                folder = self.next_version()
                self.engine = qe.EdgeShard.create(str(folder), config)
                self.set_live(folder)
        except Exception as exc:  # the engine raises plain Exceptions
            self._release_folder()
            raise VectorStoreUnavailable(f"cannot open the vector shard at {self.root}: {exc}") from exc
        return self.engine

    def _take_folder(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        owner = FileLock(self.root / ".lock", timeout=0)
        try:
            owner.acquire()
        except Timeout:
            raise VectorStoreUnavailable(
                f"the embedded vector store at {self.root} is in use by another ShopLens process "
                "(stop it, or run a Qdrant server and set SHOPLENS_QDRANT_URL)"
            ) from None
        self._owner = owner

    def _release_folder(self) -> None:
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def close(self) -> None:
        if self.served is not None:
            self.served.stop()
            self.served = None
        if self.engine is not None:
            self.engine.close()
            self.engine = None
            self.unflushed = 0  # closing flushed them
        self._release_folder()


_shards: dict[Path, Shard] = {}
_shards_lock = threading.Lock()


def shared(path: Path) -> Shard:
    """The one Shard object of this process for a folder."""
    path = path.resolve()
    with _shards_lock:
        return _shards.setdefault(path, Shard(path))


def close_shards() -> None:
    from services.vectors.edge_parts import forget_rows

    with _shards_lock:
        for shard in _shards.values():
            with shard.lock:
                shard.close()
        _shards.clear()
    forget_rows()


Page = Callable[[PointFilter | None, bool, Any], tuple[list[Record], Any]]


def paged(page: Page, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]:
    """`scroll` from `scroll_page`: pages until the engine says there is no next one."""
    offset = None
    while True:
        records, offset = page(flt, with_vectors, offset)
        if records:
            yield records
        if offset is None:
            return


class EdgeBackend(VectorBackend):
    name = "edge"

    def __init__(self, root: Path, collection: str, tuning: EdgeTuning | None = None):
        self.collection = collection
        self.tuning = tuning or EdgeTuning()
        self.shard = shared(root / collection)
        self._dim = 512

    @property
    def is_embedded(self) -> bool:
        return True

    # -- lifecycle ------------------------------------------------------------------------
    def _config(self, dims: dict[str, int]) -> qe.EdgeConfig:
        t = self.tuning
        return qe.EdgeConfig(
            vectors={
                name: qe.EdgeVectorParams(dim, qe.Distance.Cosine, datatype=_DATATYPES[t.precision])
                for name, dim in dims.items()
            },
            hnsw_config=qe.HnswIndexConfig(
                m=t.m,
                ef_construct=t.ef_construct,
                full_scan_threshold=t.full_scan_threshold_kb,
                max_indexing_threads=os.cpu_count() or 1,  # the build runs apart from searches: use every core
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=t.indexing_threshold_kb),
        )

    def ensure(self, dims: dict[str, int]) -> None:
        self._dim = sum(dims.values())
        with self.shard.lock:
            present = set(self.shard.open(self._config(dims)).info().payload_schema)
        wanted = _payload_indexes()
        if TEXT not in dims:  # a photo space: words and codes are on text points only
            wanted = {k: v for k, v in wanted.items() if k not in TEXT_ONLY}
        missing = {k: v for k, v in wanted.items() if k not in present}
        if missing:  # a new store, or one made before an index existed: it gets it now
            self._update([qe.UpdateOperation.create_field_index(k, v) for k, v in missing.items()])

    def exists(self) -> bool:
        return self.shard.root.exists()

    def _engine(self) -> qe.EdgeShard:
        return self.shard.open(None)

    def drop(self) -> None:
        with self.shard.write_gate, self.shard.lock:
            self.shard.close()
            if self.shard.root.exists():
                shutil.rmtree(self.shard.root)

    def close(self) -> None:
        with self.shard.lock:
            if self.shard.engine is not None:
                self.shard.engine.flush()

    def flush(self) -> float:
        """Everything written on disk (dirty pages synced first, with the GIL released); returns
        how long the engine's own flush took, in ms (it holds the GIL)."""
        settle(self.shard.live())
        with self.shard.lock:
            started = time.perf_counter()
            self._engine().flush()
            self.shard.unflushed = 0
            return (time.perf_counter() - started) * 1000

    # -- writes ---------------------------------------------------------------------------
    def _update(self, operations: Sequence[qe.UpdateOperation], points: int = 0) -> None:
        with self.shard.write_gate:
            for op in operations:  # one engine call at a time: searches get in between
                with self.shard.lock:
                    self._engine().update(op)
            self.shard.unflushed += points
            if self.shard.unflushed >= _FLUSH_EVERY:
                self.flush()

    def upsert(self, points: Sequence[PointData]) -> None:
        ops = [
            qe.UpdateOperation.upsert_points(
                [
                    qe.Point(p.id, {p.kind: np.asarray(p.vector, dtype=np.float32).tolist()}, _stored(p.payload))
                    for p in points[start : start + WRITE_BATCH]
                ]
            )
            for start in range(0, len(points), WRITE_BATCH)
        ]
        self._update(ops, len(points))

    def overwrite_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        self._update(
            [qe.UpdateOperation.overwrite_payload([pid], _stored(payload)) for pid, payload in payloads.items()],
            len(payloads),
        )

    def delete_where(self, flt: PointFilter, keep_ids: Collection[str] = ()) -> None:
        where = to_filter(flt, keep_ids)
        if where is None:
            raise ValueError("refusing to delete without a filter")
        self._update([qe.UpdateOperation.delete_points_by_filter(where)])

    def delete_ids(self, ids: Sequence[str]) -> None:
        self._update([qe.UpdateOperation.delete_points(list(ids))], len(ids))

    # -- reads ----------------------------------------------------------------------------
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        with self.shard.lock:
            records = self._engine().retrieve(list(ids), with_payload=True, with_vector=with_vectors)
        return [_record(r) for r in records]

    def holding(self, ids: Sequence[str]) -> set[str]:
        """The ids this shard holds (no payloads or vectors read)."""
        with self.shard.lock:
            records = self._engine().retrieve(list(ids), with_payload=False, with_vector=False)
        return {str(r.id) for r in records}

    def search(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        with self.shard.lock:
            points = self._engine().query(self._nearest(vector, using, flt, limit))
        return [Hit(str(p.id), float(p.score), _hit_payload(p.payload)) for p in points]

    def search_batch(
        self, vectors: Sequence[np.ndarray], using: str, flts: Sequence[PointFilter], limit: int
    ) -> list[list[Hit]]:
        requests = [self._nearest(v, using, f, limit) for v, f in zip(vectors, flts, strict=True)]
        if not requests:
            return []
        with self.shard.lock:
            answers = self._engine().query_batch(qe.QueryBatchRequest(requests))
        return [[Hit(str(p.id), float(p.score), _hit_payload(p.payload)) for p in points] for points in answers]

    def _nearest(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=using),
            filter=to_filter(flt),
            with_payload=True,
            # ACORN: under a filter the graph search also walks neighbours' neighbours, so a
            # filter that passes few points (a price range, in stock) cannot cut the graph apart.
            params=qe.SearchParams(
                hnsw_ef=max(self.tuning.ef_search, limit), acorn=qe.AcornSearchParams(enable=True, max_selectivity=0.4)
            ),
        )

    def lexical_search(self, text: str, flt: PointFilter, limit: int) -> list[Hit]:
        if not text.strip():
            return []
        request = qe.QueryRequest(
            limit=limit, query=qe.TextQuery(LEXICAL, text), filter=to_filter(flt), with_payload=True
        )
        with self.shard.lock:
            points = self._engine().query(request)
        return [Hit(str(p.id), float(p.score), _hit_payload(p.payload)) for p in points]

    def facet(self, key: str, flt: PointFilter | None, limit: int) -> list[tuple[str, int]]:
        request = qe.FacetRequest(key, limit=limit, exact=False, filter=to_filter(flt))
        with self.shard.lock:
            hits = self._engine().facet(request)
        return [(str(h.value), int(h.count)) for h in hits]

    def scroll(self, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]:
        return paged(self.scroll_page, flt, with_vectors)

    def scroll_page(self, flt: PointFilter | None, with_vectors: bool, offset: Any) -> tuple[list[Record], Any]:
        """One page of `scroll` and where the next starts (None after the last)."""
        request = qe.ScrollRequest(
            offset=offset, limit=512, filter=to_filter(flt), with_payload=True, with_vector=with_vectors
        )
        with self.shard.lock:
            records, offset = self._engine().scroll(request)
        return [_record(r) for r in records], offset

    def count(self, flt: PointFilter | None = None) -> int:
        with self.shard.lock:
            return self._engine().count(qe.CountRequest(filter=to_filter(flt), exact=True))

    # -- index ----------------------------------------------------------------------------
    def unindexed_kb(self) -> float:
        """Vector data not yet in an HNSW graph (what a build would index), as the engine stores it.

        The engine weighs its indexing threshold in stored bytes (2 a float at half precision): a
        build started below it would only rewrite the unindexed segment, which then opens slowly.
        """
        with self.shard.lock:
            info = self._engine().info()
            vectors = self.count(PointFilter())
        stored = 2 if self.tuning.precision == "float16" else 4
        return max(0, vectors - info.indexed_vectors_count) * self._dim * stored / 1024

    def build_index(self) -> IndexBuild | None:
        """Build the HNSW graph for everything written since the last build, here.

        Writes wait from the copy to the switch; searches go on against the live version. This
        process opens the built copy and closes the old version, and the engine holds the GIL for
        both (`held` reports each); a collection in parts hands each built part to a part server
        instead (part_server.py). Searches pause only while the reference is switched.
        """
        if self.unindexed_kb() < self.tuning.indexing_threshold_kb:
            return None
        started = time.perf_counter()
        held: dict[str, float] = {}  # engine calls of this process that hold the GIL, in ms
        with self.shard.write_gate:
            held["flush"] = self.flush()
            vectors = self.count(PointFilter())
            source = self.shard.live()
            target = built_copy(self.shard)
            with timed(held, "open"):
                built = qe.EdgeShard.load(str(target))
            self.shard.set_live(target)  # durable first (an fsync): a crash from here on opens the built copy
            paused = time.perf_counter()
            with self.shard.lock:
                previous, self.shard.engine = self.shard.engine, built
                pause_ms = (time.perf_counter() - paused) * 1000
            if previous is not None:
                settle(source)
                with timed(held, "close"):
                    previous.close()
            if source is not None:
                shutil.rmtree(source, ignore_errors=True)
        log.debug("index build of %s: engine calls held %s ms", self.collection, held)
        build = IndexBuild(vectors, time.perf_counter() - started, pause_ms, held)
        log.info(
            "vector index built: %d vectors in %.1f s (searches paused %.1f ms)",
            build.vectors,
            build.seconds,
            build.pause_ms,
        )
        return build


def built_copy(shard: Shard) -> Path:
    """The live version (flushed, writes held back by the caller) copied to the next version
    and its graph built there by a child process: the engine holds the GIL while it optimizes."""
    source, target = shard.live(), shard.next_version()
    assert source is not None
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)  # searches only read: they go on meanwhile
    done = subprocess.run(
        [sys.executable, "-m", "services.vectors.edge_build", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise RuntimeError(f"building the vector index failed: {done.stderr.strip()[-500:]}")
    settle(target)  # the child's writes, on disk before the engine's own fsyncs wait for them
    return target


def settle(folder: Path | None) -> None:
    """Write a shard folder's dirty pages to disk with the GIL released.

    The engine fsyncs as it flushes, opens and closes a shard, holding the GIL; an fsync waits for
    every dirty page of its file (a closing shard's written vectors, a built copy the child has
    just written). Syncing here first leaves those calls little to wait for: closing the old
    version of a 300k-photo shard took 250-270 ms straight after writes and 42-45 ms after a sync.
    """
    if folder is None or not folder.exists():
        return
    for path in folder.rglob("*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # removed meanwhile (a WAL segment the engine rolled)
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


@contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        into[name] = (time.perf_counter() - started) * 1000


def to_filter(flt: PointFilter | None, keep_ids: Collection[str] = ()) -> qe.Filter | None:
    return translate(
        flt,
        keep_ids,
        _condition,
        lambda ids: qe.HasIdCondition(set(ids)),
        lambda must, must_not: qe.Filter(must=must, must_not=must_not) if must or must_not else None,
    )


def _condition(clause: Clause) -> qe.FieldCondition:
    if clause.within is not None:
        return qe.FieldCondition(clause.key, range=qe.RangeFloat(gte=clause.within[0], lte=clause.within[1]))
    if clause.any_of:
        return qe.FieldCondition(clause.key, match=qe.MatchAny(list(clause.any_of)))
    if isinstance(clause.equals, bool):
        return qe.FieldCondition(f"{_SHADOW}{clause.key}", match=qe.MatchValue("true" if clause.equals else "false"))
    if clause.equals is None:
        raise ValueError(f"clause on {clause.key} has no condition")
    return qe.FieldCondition(clause.key, match=qe.MatchValue(clause.equals))


def _record(point: Any) -> Record:
    return record(point.id, _visible(point.payload), point.vector)

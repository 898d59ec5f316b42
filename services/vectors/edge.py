"""The embedded default: Qdrant's own engine in-process (qdrant-edge-py), one shard folder per
collection.

Why this shape:
- Writes land in an appendable segment that is searched by a plain scan, so new products are
  searchable at once. The HNSW graph is built once, after a bulk load (`build_index`), not per
  point.
- The engine holds the GIL while it optimizes, which would stall every search for the whole
  build. So the build runs in a child process on a copy of the shard; searches go on against
  the live shard, writes wait, and the built copy is swapped in under a short pause.
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
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from services.vectors.base import (
    BOOL_FIELDS,
    FLOAT_FIELDS,
    IMAGE,
    KEYWORD_FIELDS,
    TEXT,
    Hit,
    IndexBuild,
    PointData,
    PointFilter,
    Record,
    VectorBackend,
    VectorStoreUnavailable,
)

log = logging.getLogger(__name__)
_BATCH = 1024
# The Python binding turns MatchValue(True) into the integer 1, which never matches a JSON bool,
# so each bool field is also stored as a keyword ("true"/"false") under this prefix and
# filtered on that; readers never see it.
_SHADOW = "_kw_"


def _stored(payload: dict[str, Any]) -> dict[str, Any]:
    shadow = {f"{_SHADOW}{k}": ("true" if payload[k] else "false") for k in BOOL_FIELDS if isinstance(payload.get(k), bool)}
    return {**payload, **shadow} if shadow else payload


def _visible(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if not k.startswith(_SHADOW)}


@dataclass(frozen=True)
class EdgeTuning:
    m: int = 16
    ef_construct: int = 100
    ef_search: int = 128
    indexing_threshold_kb: int = 10_000  # an unindexed segment above this gets an HNSW graph
    full_scan_threshold_kb: int = 10_000  # below this (or a filter this selective) an exact scan is faster


class _Shard:
    """One open shard folder, shared by every backend object of this process."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.RLock()  # every call into the engine (it holds the GIL anyway)
        self.write_gate = threading.Lock()  # writers; held by an index build from copy to swap
        self.engine: qe.EdgeShard | None = None

    def open(self, config: qe.EdgeConfig | None) -> qe.EdgeShard:
        if self.engine is None:
            _recover_swap(self.path)
            try:
                if (self.path / "edge_config.json").exists():
                    self.engine = qe.EdgeShard.load(str(self.path))
                elif config is not None:
                    self.engine = qe.EdgeShard.create(str(self.path), config)
                else:
                    raise VectorStoreUnavailable(f"no vector shard at {self.path}")
            except VectorStoreUnavailable:
                raise
            except Exception as exc:  # the engine raises plain Exceptions
                if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                    raise VectorStoreUnavailable(
                        f"the embedded vector store at {self.path} is in use by another ShopLens process "
                        "(stop it, or run a Qdrant server and set SHOPLENS_QDRANT_URL)"
                    ) from exc
                raise VectorStoreUnavailable(f"cannot open the vector shard at {self.path}: {exc}") from exc
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


_shards: dict[Path, _Shard] = {}
_shards_lock = threading.Lock()


def _shared(path: Path) -> _Shard:
    path = path.resolve()
    with _shards_lock:
        return _shards.setdefault(path, _Shard(path))


def close_shards() -> None:
    with _shards_lock:
        for shard in _shards.values():
            with shard.lock:
                shard.close()
        _shards.clear()


def _recover_swap(path: Path) -> None:
    """Finish a swap that a killed process left half done (see `EdgeBackend.build_index`)."""
    building, old = path.with_name(path.name + ".built"), path.with_name(path.name + ".old")
    if not path.exists() and building.exists():
        os.replace(building, path)
    if not path.exists() and old.exists():
        os.replace(old, path)
    for leftover in (building, old, path.with_name(path.name + ".building")):
        if leftover.exists():
            shutil.rmtree(leftover)


class EdgeBackend(VectorBackend):
    name = "edge"

    def __init__(self, root: Path, collection: str, tuning: EdgeTuning | None = None):
        self.collection = collection
        self.tuning = tuning or EdgeTuning()
        self.shard = _shared(root / collection)
        self._dim = 512

    @property
    def is_embedded(self) -> bool:
        return True

    # -- lifecycle ------------------------------------------------------------------------
    def _config(self, image_dim: int, text_dim: int) -> qe.EdgeConfig:
        t = self.tuning
        return qe.EdgeConfig(
            vectors={
                IMAGE: qe.EdgeVectorParams(image_dim, qe.Distance.Cosine),
                TEXT: qe.EdgeVectorParams(text_dim, qe.Distance.Cosine),
            },
            hnsw_config=qe.HnswIndexConfig(m=t.m, ef_construct=t.ef_construct, full_scan_threshold=t.full_scan_threshold_kb),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=t.indexing_threshold_kb),
        )

    def ensure(self, image_dim: int, text_dim: int) -> None:
        self._dim = max(image_dim, text_dim)
        with self.shard.lock:
            fresh = self.shard.engine is None and not (self.shard.path / "edge_config.json").exists()
            engine = self.shard.open(self._config(image_dim, text_dim))
            if fresh:
                for key in KEYWORD_FIELDS:
                    engine.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
                for key in FLOAT_FIELDS:
                    engine.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Float))
                for key in BOOL_FIELDS:
                    engine.update(qe.UpdateOperation.create_field_index(f"{_SHADOW}{key}", qe.PayloadSchemaType.Keyword))

    def _engine(self) -> qe.EdgeShard:
        return self.shard.open(None)

    def drop(self) -> None:
        with self.shard.write_gate, self.shard.lock:
            self.shard.close()
            if self.shard.path.exists():
                shutil.rmtree(self.shard.path)

    def close(self) -> None:
        with self.shard.lock:
            if self.shard.engine is not None:
                self.shard.engine.flush()

    # -- writes ---------------------------------------------------------------------------
    def _update(self, operations: Sequence[qe.UpdateOperation]) -> None:
        with self.shard.write_gate, self.shard.lock:
            engine = self._engine()
            for op in operations:
                engine.update(op)

    def upsert(self, points: Sequence[PointData]) -> None:
        ops = [
            qe.UpdateOperation.upsert_points([
                qe.Point(p.id, {p.kind: np.asarray(p.vector, dtype=np.float32).tolist()}, _stored(p.payload))
                for p in points[start : start + _BATCH]
            ])
            for start in range(0, len(points), _BATCH)
        ]
        self._update(ops)

    def overwrite_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        self._update([qe.UpdateOperation.overwrite_payload([pid], _stored(payload)) for pid, payload in payloads.items()])

    def delete_where(self, flt: PointFilter, keep_ids: Collection[str] = ()) -> None:
        self._update([qe.UpdateOperation.delete_points_by_filter(to_filter(flt, keep_ids))])

    def delete_ids(self, ids: Sequence[str]) -> None:
        self._update([qe.UpdateOperation.delete_points(list(ids))])

    # -- reads ----------------------------------------------------------------------------
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        with self.shard.lock:
            records = self._engine().retrieve(list(ids), with_payload=True, with_vector=with_vectors)
        return [_record(r) for r in records]

    def search(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=using),
            filter=to_filter(flt),
            with_payload=True,
            params=qe.SearchParams(hnsw_ef=max(self.tuning.ef_search, limit)),
        )
        with self.shard.lock:
            points = self._engine().query(request)
        return [Hit(str(p.id), float(p.score), _visible(p.payload)) for p in points]

    def scroll(self, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]:
        offset = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=512, filter=to_filter(flt), with_payload=True, with_vector=with_vectors)
            with self.shard.lock:
                records, offset = self._engine().scroll(request)
            if records:
                yield [_record(r) for r in records]
            if offset is None:
                return

    def count(self, flt: PointFilter | None = None) -> int:
        with self.shard.lock:
            return self._engine().count(qe.CountRequest(filter=to_filter(flt), exact=True))

    # -- index ----------------------------------------------------------------------------
    def unindexed_kb(self) -> float:
        """Vector data not yet in an HNSW graph (what a build would index)."""
        with self.shard.lock:
            info = self._engine().info()
            vectors = self.count(PointFilter())
        return max(0, vectors - info.indexed_vectors_count) * self._dim * 4 / 1024

    def build_index(self) -> IndexBuild | None:
        """Build the HNSW graph for everything written since the last build, without stalling search."""
        if self.unindexed_kb() < self.tuning.indexing_threshold_kb:
            return None
        path = self.shard.path
        building, built, old = (path.with_name(path.name + s) for s in (".building", ".built", ".old"))
        started = time.perf_counter()
        with self.shard.write_gate:
            with self.shard.lock:
                self._engine().flush()
                vectors = self.count(PointFilter())
                if building.exists():
                    shutil.rmtree(building)
                shutil.copytree(path, building)
            done = subprocess.run(
                [sys.executable, "-m", "services.vectors.edge_build", str(building)],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                shutil.rmtree(building, ignore_errors=True)
                raise RuntimeError(f"building the vector index failed: {done.stderr.strip()[-500:]}")
            os.replace(building, built)
            paused = time.perf_counter()
            with self.shard.lock:
                self.shard.close()
                os.replace(path, old)
                os.replace(built, path)
                self.shard.open(None)
                pause_ms = (time.perf_counter() - paused) * 1000
            shutil.rmtree(old, ignore_errors=True)
        build = IndexBuild(vectors, time.perf_counter() - started, pause_ms)
        log.info("vector index built: %d vectors in %.1f s (searches paused %.0f ms)", build.vectors, build.seconds, build.pause_ms)
        return build


def to_filter(flt: PointFilter | None, keep_ids: Collection[str] = ()) -> qe.Filter | None:
    if flt is None:
        return None
    must: list[Any] = []
    if flt.kind is not None:
        must.append(qe.FieldCondition("kind", match=qe.MatchValue(flt.kind)))
    for key, values in (("sku", flt.skus), ("category", flt.categories), ("brand", flt.brands)):
        if values:
            must.append(qe.FieldCondition(key, match=qe.MatchAny(list(values))))
    if flt.min_price is not None or flt.max_price is not None:
        must.append(qe.FieldCondition("price", range=qe.RangeFloat(gte=flt.min_price, lte=flt.max_price)))
    if flt.in_stock_only:
        must.append(qe.FieldCondition(f"{_SHADOW}in_stock", match=qe.MatchValue("true")))
    must_not: list[Any] = []
    if flt.exclude_skus:
        must_not.append(qe.FieldCondition("sku", match=qe.MatchAny(list(flt.exclude_skus))))
    if keep_ids:
        must_not.append(qe.HasIdCondition(set(keep_ids)))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def _record(record: Any) -> Record:
    vectors = record.vector if isinstance(record.vector, dict) else {}
    return Record(str(record.id), _visible(record.payload), {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()})

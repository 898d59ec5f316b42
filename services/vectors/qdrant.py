"""The qdrant-client backend: a Qdrant server or cluster by URL, or qdrant-client's own
embedded mode (an exact scan in Python, for small stores and tests)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.vectors.base import (
    BOOL_FIELDS,
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    LEXICAL,
    Clause,
    Hit,
    PointData,
    PointFilter,
    Record,
    VectorBackend,
    VectorStoreUnavailable,
    record,
    translate,
)

_local_clients: dict[Path, QdrantClient] = {}
_local_lock = threading.Lock()
_BATCH = 256


def server_client(url: str, api_key: str | None, timeout: float) -> QdrantClient:
    return QdrantClient(url=url, api_key=api_key, timeout=int(timeout))


def local_client(path: Path) -> QdrantClient:
    """qdrant-client's embedded store allows one client per folder per process: shared here."""
    path = path.resolve()
    with _local_lock:
        if path not in _local_clients:
            path.mkdir(parents=True, exist_ok=True)
            try:
                _local_clients[path] = QdrantClient(path=str(path))
            except RuntimeError as exc:
                raise VectorStoreUnavailable(
                    f"the embedded vector store at {path} is in use by another ShopLens process "
                    "(stop it, or run a Qdrant server and set SHOPLENS_QDRANT_URL)"
                ) from exc
        return _local_clients[path]


def close_local_clients() -> None:
    with _local_lock:
        for client in _local_clients.values():
            client.close()
        _local_clients.clear()


class _Guarded:
    """The client with transport failures turned into VectorStoreUnavailable (retried by callers)."""

    def __init__(self, client: QdrantClient):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except (ResponseHandlingException, httpx.TransportError, ConnectionError) as exc:
                raise VectorStoreUnavailable(f"Qdrant is unreachable ({exc.__class__.__name__}: {exc})") from exc
            except UnexpectedResponse as exc:
                if exc.status_code is not None and exc.status_code >= 500:
                    raise VectorStoreUnavailable(f"Qdrant answered HTTP {exc.status_code}") from exc
                raise

        return call


def to_filter(flt: PointFilter | None, keep_ids: Collection[str] = ()) -> models.Filter | None:
    return translate(
        flt,
        keep_ids,
        _condition,
        lambda ids: models.HasIdCondition(has_id=list(ids)),
        lambda must, must_not: models.Filter(must=must, must_not=must_not),
    )


def _condition(clause: Clause) -> models.FieldCondition:
    if clause.within is not None:
        return models.FieldCondition(key=clause.key, range=models.Range(gte=clause.within[0], lte=clause.within[1]))
    if clause.any_of:
        return models.FieldCondition(key=clause.key, match=models.MatchAny(any=list(clause.any_of)))
    if clause.equals is None:
        raise ValueError(f"clause on {clause.key} has no condition")
    return models.FieldCondition(key=clause.key, match=models.MatchValue(value=clause.equals))


class QdrantBackend(VectorBackend):
    def __init__(
        self, client: QdrantClient, collection: str, shards: int = 1, replicas: int = 1, precision: str = "float16"
    ):
        self.client = _Guarded(client)
        self.collection = collection
        self._shards, self._replicas = shards, replicas
        # a server keeps float16 vectors in half the memory; qdrant-client's embedded mode ignores it
        self._datatype = models.Datatype.FLOAT16 if precision == "float16" else models.Datatype.FLOAT32
        self.name = "qdrant-local" if self.is_embedded else "qdrant"

    @property
    def is_embedded(self) -> bool:
        return self.client._client._client.__class__.__name__ == "QdrantLocal"

    def ensure(self, dims: dict[str, int]) -> None:
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config={
                    name: models.VectorParams(size=dim, distance=models.Distance.COSINE, datatype=self._datatype)
                    for name, dim in dims.items()
                },
                shard_number=self._shards,
                replication_factor=self._replicas,
            )
        present = set(self.client.get_collection(self.collection).payload_schema or {})
        # BM25 needs the text index in every mode; filters need the others on servers only
        # (qdrant-client's embedded mode scans)
        schema: dict[str, Any] = {LEXICAL: models.TextIndexParams(type=models.TextIndexType.TEXT, scoring=True)}
        if not self.is_embedded:
            schema.update(
                {
                    **{k: models.PayloadSchemaType.KEYWORD for k in KEYWORD_FIELDS},
                    **{k: models.PayloadSchemaType.FLOAT for k in FLOAT_FIELDS},
                    **{k: models.PayloadSchemaType.BOOL for k in BOOL_FIELDS},
                }
            )
        for name, kind in schema.items():
            if name not in present:  # a collection made before an index existed gets it now
                self.client.create_payload_index(self.collection, name, field_schema=kind, wait=True)

    def exists(self) -> bool:
        return bool(self.client.collection_exists(self.collection))

    def drop(self) -> None:
        if self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)

    def upsert(self, points: Sequence[PointData]) -> None:
        structs = [
            models.PointStruct(
                id=p.id, vector={p.kind: np.asarray(p.vector, dtype=np.float32).tolist()}, payload=p.payload
            )
            for p in points
        ]
        for start in range(0, len(structs), _BATCH):
            self.client.upsert(self.collection, points=structs[start : start + _BATCH], wait=True)

    def overwrite_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        ops = [
            models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload=payload, points=[pid]))
            for pid, payload in payloads.items()
        ]
        for start in range(0, len(ops), _BATCH):
            self.client.batch_update_points(self.collection, update_operations=ops[start : start + _BATCH], wait=True)

    def delete_where(self, flt: PointFilter, keep_ids: Collection[str] = ()) -> None:
        where = to_filter(flt, keep_ids)
        if where is None:
            raise ValueError("refusing to delete without a filter")
        selector = models.FilterSelector(filter=where)
        self.client.delete(self.collection, points_selector=selector, wait=True)

    def delete_ids(self, ids: Sequence[str]) -> None:
        self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        records = self.client.retrieve(self.collection, ids=list(ids), with_payload=True, with_vectors=with_vectors)
        return [_record(r) for r in records]

    def search(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        result = self.client.query_points(
            self.collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            using=using,
            query_filter=to_filter(flt),
            limit=limit,
            with_payload=True,
        )
        return [Hit(str(p.id), float(p.score), _hit_payload(p.payload)) for p in result.points]

    def search_batch(
        self, vectors: Sequence[np.ndarray], using: str, flts: Sequence[PointFilter], limit: int
    ) -> list[list[Hit]]:
        requests = [
            models.QueryRequest(
                query=np.asarray(v, dtype=np.float32).tolist(),
                using=using,
                filter=to_filter(f),
                limit=limit,
                with_payload=True,
            )
            for v, f in zip(vectors, flts, strict=True)
        ]
        if not requests:
            return []
        answers = self.client.query_batch_points(self.collection, requests=requests)
        return [[Hit(str(p.id), float(p.score), _hit_payload(p.payload)) for p in a.points] for a in answers]

    def search_grouped(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        result = self.client.query_points_groups(
            self.collection,
            group_by="sku",
            query=np.asarray(vector, dtype=np.float32).tolist(),
            using=using,
            query_filter=to_filter(flt),
            limit=limit,
            group_size=1,
            with_payload=True,
        )
        return [
            Hit(str(g.hits[0].id), float(g.hits[0].score), _hit_payload(g.hits[0].payload))
            for g in result.groups
            if g.hits
        ]

    def scroll(self, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                scroll_filter=to_filter(flt),
                limit=512,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors,
            )
            if records:
                yield [_record(r) for r in records]
            if offset is None:
                return

    def count(self, flt: PointFilter | None = None) -> int:
        return self.client.count(self.collection, count_filter=to_filter(flt), exact=True).count

    def lexical_search(self, text: str, flt: PointFilter, limit: int) -> list[Hit]:
        if not text.strip():
            return []
        result = self.client.query_points(
            self.collection,
            query=models.TextQuery(text=text),
            using=LEXICAL,
            query_filter=to_filter(flt),
            limit=limit,
            with_payload=models.PayloadSelectorExclude(exclude=[LEXICAL]),
        )
        return [Hit(str(p.id), float(p.score), _hit_payload(p.payload)) for p in result.points]

    def facet(self, key: str, flt: PointFilter | None, limit: int) -> list[tuple[str, int]]:
        response = self.client.facet(self.collection, key, facet_filter=to_filter(flt), limit=limit, exact=False)
        return [(str(h.value), int(h.count)) for h in response.hits]


def _record(point: Any) -> Record:
    return record(point.id, point.payload or {}, point.vector)


def _hit_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if k != LEXICAL}

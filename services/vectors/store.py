"""The vector store facade: one collection per embedder identity, on any Qdrant backend.

Each product has one point per image (named vector `image`) and one point for its text
(named vector `text`); every point carries the product's filterable payload. Point ids are
derived from content (sku + image sha256 / text hash), so every write is an idempotent upsert.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.embedders.base import EmbedderIdentity
from services.settings import Settings

IMAGE, TEXT = "image", "text"
_NAMESPACE = uuid.UUID("6f1c7d2e-3b8a-4c55-9a51-5e0f3c2b9d10")
INDEXED_FIELDS = {
    "sku": models.PayloadSchemaType.KEYWORD,
    "kind": models.PayloadSchemaType.KEYWORD,
    "category": models.PayloadSchemaType.KEYWORD,
    "brand": models.PayloadSchemaType.KEYWORD,
    "price": models.PayloadSchemaType.FLOAT,
    "in_stock": models.PayloadSchemaType.BOOL,
}

_embedded_clients: dict[Path, QdrantClient] = {}
_embedded_lock = threading.Lock()


class VectorStoreUnavailable(Exception):
    """Qdrant cannot be reached or its folder is in use by another process."""


def image_point_id(sku: str, sha256: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{sku}/image/{sha256}"))


def text_point_id(sku: str, text_sha: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{sku}/text/{text_sha}"))


@dataclass
class PointData:
    id: str
    kind: str  # IMAGE or TEXT
    vector: np.ndarray
    payload: dict[str, Any]


@dataclass
class Hit:
    point_id: str
    score: float
    payload: dict[str, Any]


def make_client(settings: Settings) -> QdrantClient:
    """A server client when SHOPLENS_QDRANT_URL is set, else the embedded on-disk store.

    The embedded store allows one client per folder per process (and one process at a time),
    so it is shared here.
    """
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantClient(url=settings.qdrant_url, api_key=key, timeout=int(settings.qdrant_timeout))
    path = settings.qdrant_path.resolve()
    with _embedded_lock:
        if path not in _embedded_clients:
            path.mkdir(parents=True, exist_ok=True)
            try:
                _embedded_clients[path] = QdrantClient(path=str(path))
            except RuntimeError as exc:
                raise VectorStoreUnavailable(
                    f"the embedded vector store at {path} is in use by another ShopLens process "
                    "(stop it, or run a Qdrant server and set SHOPLENS_QDRANT_URL)"
                ) from exc
        return _embedded_clients[path]


def close_embedded_clients() -> None:
    with _embedded_lock:
        for client in _embedded_clients.values():
            client.close()
        _embedded_clients.clear()


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


class VectorStore:
    def __init__(self, client: QdrantClient, identity: EmbedderIdentity, prefix: str = "shoplens", shards: int = 1, replicas: int = 1):
        self.client = _Guarded(client)
        self.identity = identity
        self.collection = f"{prefix}-{identity.key}"
        self._shards, self._replicas = shards, replicas
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings, identity: EmbedderIdentity) -> VectorStore:
        store = cls(make_client(settings), identity, settings.qdrant_collection_prefix, settings.qdrant_shards, settings.qdrant_replicas)
        store.ensure_collection()
        return store

    @property
    def is_embedded(self) -> bool:
        return self.client._client._client.__class__.__name__ == "QdrantLocal"

    def ensure_collection(self) -> None:
        if self._ready:
            return
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config={
                    IMAGE: models.VectorParams(size=self.identity.image_dim, distance=models.Distance.COSINE),
                    TEXT: models.VectorParams(size=self.identity.text_dim, distance=models.Distance.COSINE),
                },
                shard_number=self._shards,
                replication_factor=self._replicas,
            )
            if not self.is_embedded:  # the embedded store scans; indexes matter on servers
                for name, schema in INDEXED_FIELDS.items():
                    self.client.create_payload_index(self.collection, name, field_schema=schema)
        self._ready = True

    def drop(self) -> None:
        if self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)
        self._ready = False

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(id=p.id, vector={p.kind: p.vector.astype(np.float32).tolist()}, payload=p.payload)
            for p in points
        ]
        for start in range(0, len(structs), 256):
            self.client.upsert(self.collection, points=structs[start : start + 256], wait=True)

    def set_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        """Overwrite the payload of existing points (a price change re-embeds nothing)."""
        ops = [
            models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload=payload, points=[pid]))
            for pid, payload in payloads.items()
        ]
        for start in range(0, len(ops), 256):
            self.client.batch_update_points(self.collection, update_operations=ops[start : start + 256], wait=True)

    def delete_skus(self, skus: Iterable[str]) -> None:
        skus = list(skus)
        for start in range(0, len(skus), 256):
            self.client.delete(
                self.collection,
                points_selector=models.FilterSelector(filter=_sku_filter(skus[start : start + 256])),
                wait=True,
            )

    def delete_stale(self, skus: Sequence[str], keep_ids: Iterable[str]) -> None:
        """Delete points of these products that are not in `keep_ids` (old images, old text)."""
        if not skus:
            return
        selector = models.FilterSelector(
            filter=models.Filter(
                must=[models.FieldCondition(key="sku", match=models.MatchAny(any=list(skus)))],
                must_not=[models.HasIdCondition(has_id=list(keep_ids))],
            )
        )
        self.client.delete(self.collection, points_selector=selector, wait=True)

    def delete_ids(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    # -- reads ----------------------------------------------------------------------------
    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 512):
            records = self.client.retrieve(self.collection, ids=list(ids[start : start + 512]), with_payload=False, with_vectors=False)
            found.update(str(r.id) for r in records)
        return found

    def search_grouped(self, vector: np.ndarray, using: str, query_filter: models.Filter | None, limit: int) -> list[Hit]:
        """Best point per product (grouped by sku), best first, cosine scores."""
        result = self.client.query_points_groups(
            self.collection,
            group_by="sku",
            query=vector.astype(np.float32).tolist(),
            using=using,
            query_filter=query_filter,
            limit=limit,
            group_size=1,
            with_payload=True,
        )
        return [Hit(str(g.hits[0].id), float(g.hits[0].score), g.hits[0].payload or {}) for g in result.groups if g.hits]

    def points_for_skus(self, skus: Sequence[str], with_vectors: bool = True) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
        """Every point of these products: (id, payload, named vectors)."""
        out = []
        for batch in self._scroll(_sku_filter(list(skus)) if skus else None, with_vectors):
            for record in batch:
                vectors = record.vector if isinstance(record.vector, dict) else {}
                out.append((str(record.id), record.payload or {}, {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()}))
        return out

    def all_points(self) -> Iterable[tuple[str, dict[str, Any]]]:
        for batch in self._scroll(None, False):
            for record in batch:
                yield str(record.id), record.payload or {}

    def count(self, kind: str | None = None) -> int:
        flt = None if kind is None else models.Filter(must=[models.FieldCondition(key="kind", match=models.MatchValue(value=kind))])
        return self.client.count(self.collection, count_filter=flt, exact=True).count

    def _scroll(self, flt: models.Filter | None, with_vectors: bool):
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, scroll_filter=flt, limit=512, offset=offset, with_payload=True, with_vectors=with_vectors
            )
            if records:
                yield records
            if offset is None:
                return


def _sku_filter(skus: list[str]) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="sku", match=models.MatchAny(any=skus))])

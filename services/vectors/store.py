"""The vector store facade: one collection per embedder identity, on any backend.

The backends (`BACKENDS`) implement `VectorBackend`; everything above this module speaks
`PointFilter`, `PointData` and `Hit`. Adding a backend is one module, one builder and one line
in each registry here.

Each backend's module is imported only when that backend is built: qdrant-client alone costs
about 1.4 s to import, which the embedded default (and `shoplens stats`) must not pay.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from services.vectors.base import IMAGE, TEXT, Hit, IndexBuild, PointData, PointFilter, VectorBackend
from services.vectors.spaces import Spaces

if TYPE_CHECKING:  # types only: the embedders' registry and pydantic-settings cost 0.12 s to import
    from services.embedders.base import EmbedderIdentity
    from services.settings import Settings


def split(make: Callable[[str], VectorBackend], collection: str) -> Spaces:
    """Photos and texts each in their own collection (`<collection>-image`, `-text`); a store
    written before the split (`<collection>`) is moved into them on first open."""
    return Spaces({space: make(f"{collection}-{space}") for space in (IMAGE, TEXT)}, legacy=make(collection))


def _qdrant(settings: Settings, collection: str) -> VectorBackend:
    from services.vectors.qdrant import QdrantBackend, local_client, server_client

    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        client = server_client(settings.qdrant_url, key, settings.qdrant_timeout)
    else:
        client = local_client(settings.qdrant_path)
    return split(
        lambda name: QdrantBackend(
            client, name, settings.qdrant_shards, settings.qdrant_replicas, settings.vector_precision
        ),
        collection,
    )


def _edge(settings: Settings, collection: str) -> VectorBackend:
    from services.vectors.edge import EdgeTuning
    from services.vectors.edge_parts import EdgeParts

    tuning = EdgeTuning(
        m=settings.hnsw_m,
        ef_construct=settings.hnsw_ef_construct,
        ef_search=settings.hnsw_ef,
        indexing_threshold_kb=settings.edge_indexing_threshold_kb,
        full_scan_threshold_kb=settings.edge_full_scan_threshold_kb,
        precision=settings.vector_precision,
        part_kb=settings.edge_part_kb,
    )
    return split(lambda name: EdgeParts(settings.edge_path, name, tuning), collection)


BACKENDS: dict[str, Callable[[Settings, str], VectorBackend]] = {
    "qdrant": _qdrant,
    "edge": _edge,
}
# module -> its function that releases the embedded stores it opened (folder locks)
EMBEDDED_CLOSERS: dict[str, str] = {
    "services.vectors.edge": "close_shards",
    "services.vectors.qdrant": "close_local_clients",
}


def backend_name(settings: Settings) -> str:
    """`auto`: the Qdrant server when a URL is set, else the embedded engine."""
    if settings.vector_backend == "auto":
        return "qdrant" if settings.qdrant_url else "edge"
    return settings.vector_backend


def close_embedded_clients() -> None:
    """Release every embedded store's folder lock held by this process (exit, tests).

    Only a backend module that was imported can hold one, so the others are not imported here.
    """
    for module_name, closer in EMBEDDED_CLOSERS.items():
        module = sys.modules.get(module_name)
        if module is not None:
            getattr(module, closer)()


class VectorStore:
    def __init__(self, backend: VectorBackend, identity: EmbedderIdentity, collection: str):
        self.backend = backend
        self.identity = identity
        self.collection = collection
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings, identity: EmbedderIdentity) -> VectorStore:
        collection = f"{settings.qdrant_collection_prefix}-{identity.key}"
        store = cls(BACKENDS[backend_name(settings)](settings, collection), identity, collection)
        store.ensure_collection()
        return store

    @classmethod
    def open_existing(cls, settings: Settings, identity: EmbedderIdentity) -> VectorStore | None:
        """The collection of this identity if it is there (None, and nothing created, if not)."""
        collection = f"{settings.qdrant_collection_prefix}-{identity.key}"
        backend = BACKENDS[backend_name(settings)](settings, collection)
        if not backend.exists():
            return None
        store = cls(backend, identity, collection)
        store.ensure_collection()  # a store from before the split is moved into its spaces here
        return store

    def retarget(self, settings: Settings, identity: EmbedderIdentity) -> None:
        """Switch this store, in place, to the collection of another identity.

        Why in place: an identity known without loading (a record of what `auto` chose last
        time) can prove wrong once the model is built, and the ingestor and search service
        already hold this object; they must follow, not write into the old collection.
        """
        if identity == self.identity:
            return
        fresh = VectorStore.from_settings(settings, identity)
        self.backend, self.identity, self.collection, self._ready = (
            fresh.backend,
            identity,
            fresh.collection,
            fresh._ready,
        )

    @property
    def sync_key(self) -> str:
        """Names where the vectors live: a new backend or embedder means every product syncs again."""
        return f"{self.backend.name}:{self.collection}"

    @property
    def is_embedded(self) -> bool:
        return self.backend.is_embedded

    def ensure_collection(self) -> None:
        if not self._ready:
            self.backend.ensure({IMAGE: self.identity.image_dim, TEXT: self.identity.text_dim})
            self._ready = True

    def drop(self) -> None:
        self.backend.drop()
        self._ready = False

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        if points:
            self.backend.upsert(points)

    def set_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        """Overwrite the payload of existing points (a price change re-embeds nothing)."""
        if payloads:
            self.backend.overwrite_payloads(payloads)

    def delete_skus(self, skus: Iterable[str]) -> None:
        skus = list(skus)
        for start in range(0, len(skus), 256):
            self.backend.delete_where(PointFilter(skus=tuple(skus[start : start + 256])))

    def delete_stale(self, skus: Sequence[str], keep_ids: Iterable[str]) -> None:
        """Delete points of these products that are not in `keep_ids` (old images, old text)."""
        if skus:
            self.backend.delete_where(PointFilter(skus=tuple(skus)), set(keep_ids))

    def delete_ids(self, ids: Sequence[str]) -> None:
        if ids:
            self.backend.delete_ids(ids)

    def build_index(self) -> IndexBuild | None:
        return self.backend.build_index()

    # -- reads ----------------------------------------------------------------------------
    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 512):
            found.update(r.id for r in self.backend.retrieve(ids[start : start + 512]))
        return found

    def vector(self, point_id: str, using: str) -> np.ndarray | None:
        records = self.backend.retrieve([point_id], with_vectors=True)
        return records[0].vectors.get(using) if records else None

    def search_grouped(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        """Best point per product (grouped by sku), best first, cosine scores."""
        return self.backend.search_grouped(vector, using, flt, limit)

    def search_batch(
        self, vectors: Sequence[np.ndarray], using: str, flts: Sequence[PointFilter], limit: int
    ) -> list[list[Hit]]:
        """Best points of each vector under its own filter, in one batch where the engine can."""
        return self.backend.search_batch(vectors, using, flts, limit)

    def points_for_skus(
        self, skus: Sequence[str], with_vectors: bool = True
    ) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
        """Every point of these products: (id, payload, named vectors)."""
        flt = PointFilter(skus=tuple(skus)) if skus else None
        return [(r.id, r.payload, r.vectors) for batch in self.backend.scroll(flt, with_vectors) for r in batch]

    def all_points(self) -> Iterable[tuple[str, dict[str, Any]]]:
        for batch in self.backend.scroll(None, False):
            for record in batch:
                yield record.id, record.payload

    def count(self, kind: str | None = None) -> int:
        return self.backend.count(None if kind is None else PointFilter(kind=kind))

    def lexical_search(self, text: str, flt: PointFilter, limit: int) -> list[Hit]:
        """Products whose text holds words of `text`, by BM25 (one text point per product)."""
        return self.backend.lexical_search(text, PointFilter(**{**flt.__dict__, "kind": TEXT}), limit)

    def with_codes(self, codes: Sequence[str], flt: PointFilter) -> list[str]:
        """SKUs whose identifiers (compacted: services/lexical.py) are among `codes`."""
        if not codes:
            return []
        passing = PointFilter(**{**flt.__dict__, "kind": TEXT, "codes": tuple(codes)})
        return [str(r.payload.get("sku")) for batch in self.backend.scroll(passing, False) for r in batch]

    def facets(self, flt: PointFilter, limit: int = 100) -> dict[str, list[tuple[str, int]]]:
        """Category and brand counts of the products `flt` passes (counted on their text points,
        one per product), each list under every filter but its own: the counts a shopper's
        sidebar shows beside options it can add ("Shoes (12)" while "Bags" is ticked)."""
        products = {**flt.__dict__, "kind": TEXT}
        return {
            "category": self.backend.facet("category", PointFilter(**{**products, "categories": ()}), limit),
            "brand": self.backend.facet("brand", PointFilter(**{**products, "brands": ()}), limit),
        }

    def close(self) -> None:
        self.backend.close()

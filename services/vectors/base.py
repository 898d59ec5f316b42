"""What every vector backend does, in ShopLens' own terms (no backend's classes leak out).

Each product has one point per image (named vector `image`) and one point for its text
(named vector `text`); every point carries the product's filterable payload. Point ids are
derived from content (sku + image sha256 / text hash), so every write is an idempotent upsert.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IMAGE, TEXT = "image", "text"
_NAMESPACE = uuid.UUID("6f1c7d2e-3b8a-4c55-9a51-5e0f3c2b9d10")
KEYWORD_FIELDS = ("sku", "kind", "category", "brand")
FLOAT_FIELDS = ("price",)
BOOL_FIELDS = ("in_stock",)


class VectorStoreUnavailable(Exception):
    """The vector store cannot be reached, or its folder is in use by another process."""


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


@dataclass
class Record:
    id: str
    payload: dict[str, Any]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class PointFilter:
    """Every filter ShopLens asks of a vector store; each backend translates it to its own."""

    kind: str | None = None
    skus: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False
    exclude_skus: tuple[str, ...] = ()

    def matches(self, payload: dict[str, Any]) -> bool:
        """The same filter in Python: the reference the backends are tested against."""
        price = payload.get("price")
        return (
            (self.kind is None or payload.get("kind") == self.kind)
            and (not self.skus or payload.get("sku") in self.skus)
            and (not self.categories or payload.get("category") in self.categories)
            and (not self.brands or payload.get("brand") in self.brands)
            and (self.min_price is None or (price is not None and price >= self.min_price))
            and (self.max_price is None or (price is not None and price <= self.max_price))
            and (not self.in_stock_only or payload.get("in_stock") is True)
            and payload.get("sku") not in self.exclude_skus
        )


@dataclass
class IndexBuild:
    """What building the search index after a bulk load did."""

    vectors: int
    seconds: float
    pause_ms: float  # how long searches waited while the new index was put in place


class VectorBackend(ABC):
    """One collection (one embedder identity) in one kind of vector store."""

    name: str = ""
    group_fetch_cap = 4096  # most points one grouped search reads to find `limit` products

    @property
    def is_embedded(self) -> bool:
        return False

    @abstractmethod
    def ensure(self, image_dim: int, text_dim: int) -> None: ...

    @abstractmethod
    def drop(self) -> None: ...

    @abstractmethod
    def upsert(self, points: Sequence[PointData]) -> None: ...

    @abstractmethod
    def overwrite_payloads(self, payloads: dict[str, dict[str, Any]]) -> None: ...

    @abstractmethod
    def delete_where(self, flt: PointFilter, keep_ids: Collection[str] = ()) -> None:
        """Delete the points matching `flt`, except `keep_ids`."""

    @abstractmethod
    def delete_ids(self, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Record]: ...

    @abstractmethod
    def search(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        """Best points first, cosine scores."""

    @abstractmethod
    def scroll(self, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]: ...

    @abstractmethod
    def count(self, flt: PointFilter | None = None) -> int: ...

    def search_grouped(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        """Best point per product, best first.

        Reads the best points and keeps each product's first; when fewer than `limit` products
        turn up it reads twice as many. Exact: a product missing from the first n points cannot
        beat the products found in them.
        """
        fetch = max(16, limit * 4)
        while True:
            hits = self.search(vector, using, flt, fetch)
            best: dict[str, Hit] = {}
            for hit in hits:
                best.setdefault(hit.payload.get("sku", ""), hit)
            if len(best) >= limit or len(hits) < fetch or fetch >= self.group_fetch_cap:
                return list(best.values())[:limit]
            fetch = min(fetch * 2, self.group_fetch_cap)

    def build_index(self) -> IndexBuild | None:
        """Build the search index once after a bulk load; servers index in the background."""
        return None

    def close(self) -> None:
        return None

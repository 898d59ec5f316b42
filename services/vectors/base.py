"""What every vector backend does, in ShopLens' own terms (no backend's classes leak out).

Each product has one point per image (named vector `image`) and one point for its text
(named vector `text`); every point carries the product's filterable payload. Point ids are
derived from content (sku + image sha256 / text hash), so every write is an idempotent upsert.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.errors import Unavailable

IMAGE, TEXT = "image", "text"
_NAMESPACE = uuid.UUID("6f1c7d2e-3b8a-4c55-9a51-5e0f3c2b9d10")
KEYWORD_FIELDS = ("sku", "kind", "category", "brand", "codes")
# Text points' full text (services/lexical.py), BM25-ranked by the backend's text index; never
# part of a Hit's payload (it is long and only the engine reads it).
LEXICAL = "lexical"
FACET_FIELDS = ("category", "brand")
FLOAT_FIELDS = ("price",)
BOOL_FIELDS = ("in_stock",)


class VectorStoreUnavailable(Unavailable):
    """The vector store cannot be reached, or its folder is in use by another process."""

    code = "vector_store_unavailable"
    prefix = "The search index is not available: "


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
class ProductFilter:
    """What a shopper can narrow a search by (the search service's filters)."""

    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False
    exclude_skus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Clause:
    """One condition on a payload field: equal to, any of, or within a range."""

    key: str
    equals: str | bool | None = None
    any_of: tuple[str, ...] = ()
    within: tuple[float | None, float | None] | None = None


@dataclass(frozen=True)
class PointFilter(ProductFilter):
    """Every filter ShopLens asks of a vector store, as clauses each backend translates."""

    kind: str | None = None
    skus: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()  # compacted identifiers (services/lexical.py), on text points

    def clauses(self) -> tuple[list[Clause], list[Clause]]:
        """(must, must not)."""
        must = [Clause("kind", equals=self.kind)] if self.kind is not None else []
        must += [
            Clause(key, any_of=values)
            for key, values in (
                ("sku", self.skus),
                ("category", self.categories),
                ("brand", self.brands),
                ("codes", self.codes),
            )
            if values
        ]
        if self.min_price is not None or self.max_price is not None:
            must.append(Clause("price", within=(self.min_price, self.max_price)))
        if self.in_stock_only:
            must.append(Clause("in_stock", equals=True))
        must_not = [Clause("sku", any_of=self.exclude_skus)] if self.exclude_skus else []
        return must, must_not

    def matches(self, payload: dict[str, Any]) -> bool:
        """The same filter in Python: the reference the backends are tested against."""
        must, must_not = self.clauses()
        return all(_holds(c, payload) for c in must) and not any(_holds(c, payload) for c in must_not)


def translate(
    flt: PointFilter | None,
    keep_ids: Collection[str],
    condition: Callable[[Clause], Any],
    has_ids: Callable[[Collection[str]], Any],
    make_filter: Callable[[list[Any] | None, list[Any] | None], Any],
) -> Any:
    """A PointFilter in a backend's own classes: `condition` per clause, `has_ids` to keep ids."""
    if flt is None:
        return None
    must, must_not = flt.clauses()
    excluded = [condition(c) for c in must_not] + ([has_ids(keep_ids)] if keep_ids else [])
    return make_filter([condition(c) for c in must] or None, excluded or None)


def record(point_id: Any, payload: dict[str, Any], vector: Any) -> Record:
    """A backend's point as a Record: named vectors as float32 arrays."""
    vectors = vector if isinstance(vector, dict) else {}
    return Record(str(point_id), payload, {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()})


def _holds(clause: Clause, payload: dict[str, Any]) -> bool:
    value = payload.get(clause.key)
    if clause.within is not None:  # a list (every variant's price) matches when any element does
        low, high = clause.within
        values = value if isinstance(value, list) else [value]
        return any(v is not None and (low is None or v >= low) and (high is None or v <= high) for v in values)
    if clause.any_of:
        return any(v in clause.any_of for v in value) if isinstance(value, list) else value in clause.any_of
    return value == clause.equals and type(value) is type(clause.equals)


@dataclass
class IndexBuild:
    """What building the search index after a bulk load did."""

    vectors: int
    seconds: float
    pause_ms: float  # how long searches waited while the new index was put in place
    # engine calls the build made in the serving process (each holds the GIL), by step, in ms
    held: dict[str, float] = field(default_factory=dict)

    @property
    def held_ms(self) -> float:
        """The longest of them: the longest a search could wait on the build."""
        return max(self.held.values(), default=0.0)

    @classmethod
    def of_several(cls, builds: Sequence[IndexBuild], held: dict[str, float] | None = None) -> IndexBuild | None:
        """Builds run one after another, as one: vectors and seconds add up, the longest pause
        stands, and (unless the caller names the steps) each step's longest held call."""
        if not builds:
            return None
        if held is None:
            held = {}
            for build in builds:
                for step, ms in build.held.items():
                    held[step] = max(held.get(step, 0.0), ms)
        return cls(
            sum(b.vectors for b in builds), sum(b.seconds for b in builds), max(b.pause_ms for b in builds), held
        )


def summed_facets(answers: Iterable[list[tuple[str, int]]], limit: int) -> list[tuple[str, int]]:
    """Facet counts of several stores added up, most frequent first (ties by value)."""
    totals: dict[str, int] = {}
    for answer in answers:
        for value, n in answer:
            totals[value] = totals.get(value, 0) + n
    return sorted(totals.items(), key=lambda vc: (-vc[1], vc[0]))[:limit]


class VectorBackend(ABC):
    """One collection (one embedder identity) in one kind of vector store."""

    name: str = ""
    group_fetch_cap = 4096  # most points one grouped search reads to find `limit` products

    @property
    def is_embedded(self) -> bool:
        return False

    @abstractmethod
    def ensure(self, dims: dict[str, int]) -> None:
        """Create the collection (vector name -> dimension) if missing, and its payload indexes."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the collection is there (without creating it)."""

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

    @abstractmethod
    def lexical_search(self, text: str, flt: PointFilter, limit: int) -> list[Hit]:
        """Text points ranked by BM25 of `text` over their `lexical` field, best first; only
        points holding at least one of its words."""

    @abstractmethod
    def facet(self, key: str, flt: PointFilter | None, limit: int) -> list[tuple[str, int]]:
        """The values of a keyword field among the points `flt` passes, with their counts, most
        frequent first. Counts are the engine's fast estimate (exact counting scans every
        passing point: ~40 ms at 20k points); they are exact while the store is small."""

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

    def search_batch(
        self, vectors: Sequence[np.ndarray], using: str, flts: Sequence[PointFilter], limit: int
    ) -> list[list[Hit]]:
        """One `search` per vector (with its own filter), answered together where the engine can
        plan them as one batch (the catalog audit asks one per stored photo)."""
        return [self.search(v, using, f, limit) for v, f in zip(vectors, flts, strict=True)]

    def build_index(self) -> IndexBuild | None:
        """Build the search index once after a bulk load; servers index in the background."""
        return None

    def close(self) -> None:
        return None

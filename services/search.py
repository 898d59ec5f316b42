"""The only place that knows how a query becomes results.

A query is a weighted sum of cosine similarities ("components"): a photo against product
images; a text against product images (when the embedder puts text and images in one space)
and against product texts. Each component fetches its best products from Qdrant with the
filters pushed down; with several components the candidates are rescored exactly from their
stored vectors, so every score is a true weighted cosine, not a rank fusion.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.catalog.models import Product
from services.catalog.store import CatalogStore
from services.embedders.base import Embedder, QueryKind
from services.errors import NotFound, ShopLensError
from services.media import MediaStore
from services.vectors import IMAGE, TEXT, PointFilter, ProductFilter, VectorStore, image_point_id


class QueryError(ShopLensError):
    """The query cannot be answered as asked (empty, or unsupported by this embedder)."""

    code = "bad_query"


class SearchFilters(ProductFilter):
    def for_kind(self, kind: str) -> PointFilter:
        return PointFilter(**asdict(self), kind=kind)


@dataclass
class SearchRequest:
    image: Image.Image | None = None
    text: str | None = None
    text_weight: float = 0.5  # with both a photo and a text: the text's share of the score
    filters: SearchFilters = field(default_factory=SearchFilters)
    top_k: int = 12
    offset: int = 0
    min_score: float | None = None


@dataclass
class SearchHit:
    sku: str
    title: str
    score: float
    price: float | None
    currency: str | None
    category: str | None
    brand: str | None
    in_stock: bool
    description: str
    image: Path | None  # the best-matching image's media file
    image_source: str | None
    attributes: dict[str, Any]


@dataclass
class SearchResponse:
    hits: list[SearchHit]
    took_ms: float
    embed_ms: float
    kinds: list[str]
    notes: list[str] = field(default_factory=list)
    vector_ms: float = 0.0  # vector search (and exact rescoring)
    join_ms: float = 0.0  # product rows from SQL


@dataclass(frozen=True)
class _Component:
    vector: np.ndarray
    using: str  # IMAGE or TEXT named vector
    weight: float


class SearchService:
    def __init__(
        self,
        catalog: CatalogStore,
        vectors: VectorStore,
        embedder: Embedder,
        media: MediaStore,
        text_vector_weight: float = 0.5,
        min_score: float = 0.0,
    ):
        self.catalog, self.vectors, self.embedder, self.media = catalog, vectors, embedder, media
        self.text_vector_weight, self.min_score = text_vector_weight, min_score

    def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        text = (request.text or "").strip()
        if request.image is None and not text:
            raise QueryError("give a photo, a text, or both")
        if request.top_k < 1 or request.offset < 0:
            raise QueryError("top-k must be at least 1 and offset at least 0")
        components, kinds, notes = self._components(request.image, text, request.text_weight)
        embed_ms = (time.perf_counter() - started) * 1000
        response = self._run(components, request)
        response.took_ms, response.embed_ms, response.kinds, response.notes = (
            (time.perf_counter() - started) * 1000,
            embed_ms,
            kinds,
            notes,
        )
        return response

    def more_like_this(self, sku: str, top_k: int = 8, filters: SearchFilters | None = None) -> SearchResponse:
        """Products whose photos look like this product's first photo (its stored vector, no re-embedding)."""
        started = time.perf_counter()
        product = self.catalog.get_product(sku)
        if product is None:
            raise NotFound(f"no product with SKU {sku!r}")
        filters = filters or SearchFilters()
        filters = SearchFilters(**{**filters.__dict__, "exclude_skus": (*filters.exclude_skus, sku)})
        vector, kind, using = None, QueryKind.IMAGE_TO_IMAGE.value, IMAGE
        if product.images:
            vector = self.vectors.vector(image_point_id(sku, product.images[0].sha256), IMAGE)
        if vector is None:  # no photo (or not indexed yet): its text instead
            vector, kind, using = self.embedder.embed_text(product.text), QueryKind.TEXT_TO_TEXT.value, TEXT
        response = self._run([_Component(vector, using, 1.0)], SearchRequest(filters=filters, top_k=top_k))
        response.took_ms, response.kinds = (time.perf_counter() - started) * 1000, [kind]
        return response

    # -- internals ------------------------------------------------------------------------
    def _components(
        self, image: Image.Image | None, text: str, text_weight: float
    ) -> tuple[list[_Component], list[str], list[str]]:
        supported = self.embedder.supported_queries
        components: list[_Component] = []
        kinds: list[str] = []
        notes: list[str] = []
        text_share = 0.0 if not text else (1.0 if image is None else min(max(text_weight, 0.0), 1.0))
        if image is not None:
            components.append(_Component(self.embedder.embed_image(image), IMAGE, 1.0 - text_share))
            kinds.append(QueryKind.IMAGE_TO_IMAGE.value)
        if text:
            vector = self.embedder.embed_text(text)
            if QueryKind.TEXT_TO_IMAGE in supported:
                alpha = self.text_vector_weight
                components.append(_Component(vector, IMAGE, text_share * (1 - alpha)))
                components.append(_Component(vector, TEXT, text_share * alpha))
                kinds += [QueryKind.TEXT_TO_IMAGE.value, QueryKind.TEXT_TO_TEXT.value]
            else:
                components.append(_Component(vector, TEXT, text_share))
                kinds.append(QueryKind.TEXT_TO_TEXT.value)
                notes.append(
                    f"{self.embedder.identity.backend} has no shared photo-text space: text is matched "
                    "against product titles and descriptions, not against photos"
                )
        return [c for c in components if c.weight > 0], kinds, notes

    def _run(self, components: list[_Component], request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        min_score = self.min_score if request.min_score is None else request.min_score
        wanted = request.offset + request.top_k
        if len(components) == 1:
            c = components[0]
            found = self.vectors.search_grouped(c.vector, c.using, request.filters.for_kind(c.using), wanted)
            scored = [(h.payload["sku"], c.weight * h.score, h.payload.get("image_sha")) for h in found]
        else:
            scored = self._rescore(components, request.filters, max(wanted * 3, 30))
        scored = [s for s in scored if s[1] >= min_score][request.offset : wanted]
        searched = time.perf_counter()
        hits = self._join(scored)
        joined = time.perf_counter()
        return SearchResponse(
            hits, 0.0, 0.0, [], vector_ms=(searched - started) * 1000, join_ms=(joined - searched) * 1000
        )

    def _rescore(
        self, components: list[_Component], filters: SearchFilters, limit: int
    ) -> list[tuple[str, float, str | None]]:
        candidates: dict[str, None] = {}
        for c in components:
            for hit in self.vectors.search_grouped(c.vector, c.using, filters.for_kind(c.using), limit):
                candidates.setdefault(hit.payload["sku"], None)
        if not candidates:
            return []
        image_q = [c for c in components if c.using == IMAGE]
        text_q = [c for c in components if c.using == TEXT]
        best: dict[str, tuple[float, str | None]] = {}
        text_part: dict[str, float] = {}
        for _, payload, vectors in self.vectors.points_for_skus(list(candidates)):
            sku = payload.get("sku")
            if sku is None:
                continue
            if payload.get("kind") == IMAGE and IMAGE in vectors and image_q:
                value = sum(c.weight * float(c.vector @ vectors[IMAGE]) for c in image_q)
                if sku not in best or value > best[sku][0]:
                    best[sku] = (value, payload.get("image_sha"))
            elif payload.get("kind") == TEXT and TEXT in vectors and text_q:
                text_part[sku] = sum(c.weight * float(c.vector @ vectors[TEXT]) for c in text_q)
        scored = [
            (sku, best.get(sku, (0.0, None))[0] + text_part.get(sku, 0.0), best.get(sku, (0.0, None))[1])
            for sku in candidates
        ]
        return sorted(scored, key=lambda s: -s[1])

    def _join(self, scored: list[tuple[str, float, str | None]]) -> list[SearchHit]:
        products = self.catalog.get_products(s[0] for s in scored)
        hits = []
        for sku, score, image_sha in scored:
            product = products.get(sku)
            if product is None:
                continue  # a vector whose product is gone: reconcile removes it
            hits.append(self._hit(product, score, image_sha))
        return hits

    def _hit(self, product: Product, score: float, image_sha: str | None) -> SearchHit:
        image = next(
            (i for i in product.images if i.sha256 == image_sha), product.images[0] if product.images else None
        )
        return SearchHit(
            sku=product.sku,
            title=product.title,
            score=score,
            price=None if product.price is None else float(product.price),
            currency=product.currency,
            category=product.category,
            brand=product.brand,
            in_stock=product.in_stock,
            description=product.description,
            image=self.media.path(image.media_path) if image else None,
            image_source=image.source if image else None,
            attributes=dict(product.attributes or {}),
        )

"""The only place that knows how a query becomes results.

A query's semantic score is a weighted sum of cosine similarities ("components"): a photo
against product images (the photo looked at whole and cropped to the product, each product
scored by its best view: services/query_views.py); a text against product images (when the embedder puts text and images
in one space) and against product texts. Each component fetches its best products from the
vector store with the filters pushed down; with several components the candidates are rescored
exactly from their stored vectors, so every semantic score is a true weighted cosine.

A text also searches lexically (services/lexical.py): an identifier typed in any form ranks its
product first, and BM25 over the product's words adds to the semantic score (normalised to the
best lexical match, weighted by LEXICAL_WEIGHT; measured in bench/relevance.py against rank
fusion). A product is a match when its identifier was typed, when it holds the words of the
query, or when its semantic score reaches the threshold calibrated on the catalog
(services/calibration.py); with no match the closest products are returned apart, as such.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.calibration import Thresholds, calibrate, load_thresholds, needs_calibration
from services.catalog.models import Product
from services.catalog.store import CatalogStore
from services.embedders.base import Embedder, QueryKind
from services.errors import NotFound, ShopLensError
from services.images import ImageLimits
from services.lexical import document_words, lexical_query, query_codes, query_terms
from services.media import MediaStore
from services.query_views import PER_IMAGE_BILLED, query_vectors, query_vectors_many
from services.vectors import IMAGE, TEXT, PointFilter, ProductFilter, VectorStore, image_point_id

LEXICAL_WEIGHT = 0.3  # the best lexical match adds this much (times the text's share) to its semantic score
CLOSEST = 4  # products offered under "closest" when nothing matches
THRESHOLDS_TTL = 30.0  # seconds a replica trusts the thresholds it read (another may recalibrate)


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
    min_score: float | None = None  # None: the calibrated threshold of the query's kind
    facets: bool = False  # category and brand counts of the catalog under the filters


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
    semantic: float = 0.0  # the weighted cosine part of `score`
    lexical: float = 0.0  # BM25 relative to the best lexical match (0..1); adds LEXICAL_WEIGHT × text share
    code_match: bool = False  # the query named this product's SKU, GTIN or MPN


@dataclass
class SearchResponse:
    hits: list[SearchHit]
    took_ms: float
    embed_ms: float
    kinds: list[str]
    notes: list[str] = field(default_factory=list)
    vector_ms: float = 0.0  # vector search (and exact rescoring)
    join_ms: float = 0.0  # product rows from SQL
    threshold: float | None = None  # the semantic score a match needed
    closest: list[SearchHit] = field(default_factory=list)  # with no match: the nearest products, not matches
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


@dataclass
class _Candidate:
    semantic: float = 0.0
    image_sha: str | None = None
    words: frozenset[str] = frozenset()  # the product's lexical tokens (text queries only)
    lexical: float = 0.0  # BM25 over the best lexical match: 0..1
    code: bool = False  # an identifier of it was typed


@dataclass(frozen=True)
class _Component:
    """One weighted similarity of a query. A photo has several views (the whole photo and crops
    to the product, services/query_views.py): a stored vector scores its best view."""

    views: np.ndarray  # (views, dim) unit vectors
    using: str  # IMAGE or TEXT named vector
    weight: float

    def score(self, stored: np.ndarray) -> float:
        return self.weight * float((self.views @ stored).max())


class SearchService:
    def __init__(
        self,
        catalog: CatalogStore,
        vectors: VectorStore,
        embedder: Embedder,
        media: MediaStore,
        text_vector_weight: float = 0.5,
        min_score: float | None = None,
        limits: ImageLimits | None = None,
    ):
        self.catalog, self.vectors, self.embedder, self.media = catalog, vectors, embedder, media
        self.text_vector_weight, self.min_score = text_vector_weight, min_score
        self.limits = limits or ImageLimits()
        self._thresholds: tuple[float, Thresholds | None] | None = None  # (read at, value)

    def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        text = (request.text or "").strip()
        if request.image is None and not text:
            raise QueryError("give a photo, a text, or both")
        if request.top_k < 1 or request.offset < 0:
            raise QueryError("top-k must be at least 1 and offset at least 0")
        components, kinds, notes, text_share = self._components(request.image, text, request.text_weight)
        embed_ms = (time.perf_counter() - started) * 1000
        response = self._run(components, request, text, text_share)
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
        request = SearchRequest(filters=filters, top_k=top_k, min_score=-1.0)  # neighbours, whatever their score
        response = self._run([_Component(vector[None, :], using, 1.0)], request, "", 0.0 if using == IMAGE else 1.0)
        response.took_ms, response.kinds = (time.perf_counter() - started) * 1000, [kind]
        return response

    # -- thresholds ---------------------------------------------------------------------------
    def thresholds(self) -> Thresholds | None:
        """The calibrated thresholds of this collection (re-read every THRESHOLDS_TTL seconds)."""
        now = time.monotonic()
        if self._thresholds is None or now - self._thresholds[0] > THRESHOLDS_TTL:
            self._thresholds = (now, load_thresholds(self.catalog, self.vectors.collection))
        return self._thresholds[1]

    def threshold(self, text_share: float, override: float | None = None, text: str = "") -> float:
        """The semantic score a match needs: the request's, the setting's, or the calibrated one
        (of the query's script: Chinese queries have their own, see services/calibration.py)."""
        if override is not None:
            return override
        if self.min_score is not None:
            return self.min_score
        calibrated = self.thresholds()
        return calibrated.for_query(text_share, text) if calibrated is not None else 0.0

    def calibrate(self, force: bool = False) -> Thresholds | None:
        """Calibrate after the catalog changed enough (services/calibration.py); cheap otherwise."""
        if self.min_score is not None and not force:  # a fixed threshold is set: none to calibrate
            return None
        products = self.catalog.counts()["products"]
        current = load_thresholds(self.catalog, self.vectors.collection)
        if not force and not needs_calibration(current, products):
            return current
        result = calibrate(
            self._top_semantic,
            self.catalog,
            self.media,
            self.limits,
            self.vectors.collection,
            QueryKind.TEXT_TO_IMAGE in self.embedder.supported_queries,
            billed=self.embedder.identity.backend in PER_IMAGE_BILLED,
        )
        self._thresholds = None
        return result

    def _top_semantic(
        self, images: list[Image.Image | None], texts: list[str | None], skus: list[str | None]
    ) -> list[float | None]:
        """The best semantic score of each query, against one product or the whole catalog;
        every photo's views and all texts embedded in one call each (calibration asks ~150 questions)."""
        words = [t.strip() for t in texts if t is not None and t.strip()]
        text_vectors = iter(self.embedder.embed_texts(words, queries=True).vectors if words else [])
        photos = [image for image in images if image is not None]  # each photo's views, as a shopper's are searched
        photo_views = iter(query_vectors_many(self.embedder, photos) if photos else [])
        scores: list[float | None] = []
        for image, text, sku in zip(images, texts, skus, strict=True):
            image_views = next(photo_views) if image is not None else None
            text_vector = next(text_vectors) if text is not None and text.strip() else None
            components = self._weigh(image_views, text_vector, 0.5)[0]
            if not components or (image is not None and image_views is None):
                scores.append(None)
                continue
            found = self._semantic(components, SearchFilters(), 1, only=(sku,) if sku else ())
            scores.append(max((c.semantic for c in found.values()), default=None))
        return scores

    # -- internals ------------------------------------------------------------------------
    def _components(
        self, image: Image.Image | None, text: str, text_weight: float
    ) -> tuple[list[_Component], list[str], list[str], float]:
        image_views = query_vectors(self.embedder, image) if image is not None else None
        text_vector = self.embedder.embed_text(text, query=True) if text else None
        return self._weigh(image_views, text_vector, text_weight)

    def _weigh(
        self, image_views: np.ndarray | None, text_vector: np.ndarray | None, text_weight: float
    ) -> tuple[list[_Component], list[str], list[str], float]:
        """The weighted components of a query (see the module docstring), its kinds, notes and
        the text's share of the score."""
        supported = self.embedder.supported_queries
        components: list[_Component] = []
        kinds: list[str] = []
        notes: list[str] = []
        text_share = 0.0 if text_vector is None else (1.0 if image_views is None else min(max(text_weight, 0.0), 1.0))
        if image_views is not None:
            components.append(_Component(image_views, IMAGE, 1.0 - text_share))
            kinds.append(QueryKind.IMAGE_TO_IMAGE.value)
        if text_vector is not None:
            words = text_vector[None, :]
            if QueryKind.TEXT_TO_IMAGE in supported:
                alpha = self.text_vector_weight
                components.append(_Component(words, IMAGE, text_share * (1 - alpha)))
                components.append(_Component(words, TEXT, text_share * alpha))
                kinds += [QueryKind.TEXT_TO_IMAGE.value, QueryKind.TEXT_TO_TEXT.value]
            else:
                components.append(_Component(words, TEXT, text_share))
                kinds.append(QueryKind.TEXT_TO_TEXT.value)
                notes.append(
                    f"{self.embedder.identity.backend} has no shared photo-text space: text is matched "
                    "against product titles and descriptions, not against photos"
                )
        return [c for c in components if c.weight > 0], kinds, notes, text_share

    def _run(
        self, components: list[_Component], request: SearchRequest, text: str, text_share: float
    ) -> SearchResponse:
        started = time.perf_counter()
        threshold = self.threshold(text_share, request.min_score, text)
        wanted = request.offset + request.top_k
        limit = max(wanted * 3, 30)
        codes: list[str] = []
        lexical: dict[str, float] = {}
        terms: frozenset[str] = frozenset()
        if text and text_share > 0:
            codes = self.vectors.with_codes(query_codes(text), request.filters.for_kind(TEXT))
            found = self.vectors.lexical_search(lexical_query(text), request.filters.for_kind(TEXT), limit)
            best = max((h.score for h in found), default=0.0)
            lexical = {h.payload["sku"]: h.score / best for h in found if best > 0}
            terms = query_terms(text)
        candidates = self._semantic(components, request.filters, limit, extra=[*codes, *lexical], words=bool(terms))
        for sku, candidate in candidates.items():
            candidate.code, candidate.lexical = sku in codes, lexical.get(sku, 0.0)
        fused = {sku: c.semantic + text_share * LEXICAL_WEIGHT * c.lexical for sku, c in candidates.items()}
        order = sorted(candidates, key=lambda sku: (not candidates[sku].code, -fused[sku]))
        good = [
            sku
            for sku in order
            if candidates[sku].code
            or _words_match(terms, candidates[sku].words)
            or candidates[sku].semantic >= threshold
        ]
        page = [(sku, fused[sku], candidates[sku]) for sku in good[request.offset : wanted]]
        near = [] if good else [(sku, fused[sku], candidates[sku]) for sku in order[:CLOSEST]]
        facets = self.vectors.facets(request.filters.for_kind(TEXT)) if request.facets else {}
        searched = time.perf_counter()
        hits, closest = self._join(page), self._join(near)
        joined = time.perf_counter()
        return SearchResponse(
            hits,
            0.0,
            0.0,
            [],
            vector_ms=(searched - started) * 1000,
            join_ms=(joined - searched) * 1000,
            threshold=threshold,
            closest=closest,
            facets=facets,
        )

    def _semantic(
        self,
        components: list[_Component],
        filters: SearchFilters,
        limit: int,
        extra: list[str] | None = None,
        words: bool = False,
        only: tuple[str, ...] = (),
    ) -> dict[str, _Candidate]:
        """Each candidate product's semantic score (and best photo): the best products of each
        component plus `extra` ones (lexical matches), rescored exactly from stored vectors unless
        one component alone is asked and no product text is needed."""

        def restrict(kind: str) -> PointFilter:
            flt = filters.for_kind(kind)
            return PointFilter(**{**flt.__dict__, "skus": only}) if only else flt

        if len(components) == 1 and not extra and not words:
            # one similarity: each view's best products, each product at its best view. Exact: a
            # product missing from a view's list cannot beat that view's listed products there.
            c = components[0]
            found: dict[str, _Candidate] = {}
            for view in c.views:
                for h in self.vectors.search_grouped(view, c.using, restrict(c.using), limit):
                    sku, score = h.payload["sku"], c.weight * h.score
                    if sku not in found or score > found[sku].semantic:
                        found[sku] = _Candidate(score, h.payload.get("image_sha"))
            return dict(sorted(found.items(), key=lambda item: -item[1].semantic)[:limit])
        candidates: dict[str, None] = dict.fromkeys(extra or [])
        for c in components:
            for view in c.views:
                for hit in self.vectors.search_grouped(view, c.using, restrict(c.using), limit):
                    candidates.setdefault(hit.payload["sku"], None)
        if not candidates:
            return {}
        image_q = [c for c in components if c.using == IMAGE]
        text_q = [c for c in components if c.using == TEXT]
        best: dict[str, tuple[float, str | None]] = {}
        text_part: dict[str, float] = {}
        tokens: dict[str, frozenset[str]] = {}
        for _, payload, vectors in self.vectors.points_for_skus(list(candidates)):
            sku = payload.get("sku")
            if sku is None:
                continue
            if payload.get("kind") == IMAGE and IMAGE in vectors and image_q:
                value = sum(c.score(vectors[IMAGE]) for c in image_q)
                if sku not in best or value > best[sku][0]:
                    best[sku] = (value, payload.get("image_sha"))
            elif payload.get("kind") == TEXT:
                if TEXT in vectors and text_q:
                    text_part[sku] = sum(c.score(vectors[TEXT]) for c in text_q)
                if words:
                    tokens[sku] = document_words(str(payload.get("lexical", "")))
        return {
            sku: _Candidate(
                best.get(sku, (0.0, None))[0] + text_part.get(sku, 0.0),
                best.get(sku, (0.0, None))[1],
                tokens.get(sku, frozenset()),
            )
            for sku in candidates
        }

    def _join(self, scored: list[tuple[str, float, _Candidate]]) -> list[SearchHit]:
        products = self.catalog.get_products(s[0] for s in scored)
        hits = []
        for sku, score, candidate in scored:
            product = products.get(sku)
            if product is None:
                continue  # a vector whose product is gone: reconcile removes it
            hits.append(self._hit(product, score, candidate))
        return hits

    def _hit(self, product: Product, score: float, candidate: _Candidate) -> SearchHit:
        image = next(
            (i for i in product.images if i.sha256 == candidate.image_sha),
            product.images[0] if product.images else None,
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
            semantic=candidate.semantic,
            lexical=candidate.lexical,
            code_match=candidate.code,
        )


def _words_match(terms: frozenset[str], words: frozenset[str]) -> bool:
    """The product holds the query's words: all of them, or all but one of three or more ("brown
    leather couch" matches a brown leather sofa). Gibberish matches nothing, whatever its semantic
    score; "jump rope" needs its semantic score to find a skipping rope."""
    missing = len(terms - words)
    return bool(terms) and (missing == 0 or (len(terms) >= 3 and missing == 1))

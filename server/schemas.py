"""The HTTP API's request and response bodies (`/api/v1`), shared by the server and its client.

Plain pydantic, no FastAPI: the pages and the command line import these without a web server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TOP_K = 100
MAX_OFFSET = 1000
MAX_TEXT = 1000


class Filters(BaseModel):
    """Product filters, pushed down into the vector search."""

    model_config = ConfigDict(extra="forbid")

    category: list[str] = Field(default_factory=list, max_length=50, description="any of these categories")
    brand: list[str] = Field(default_factory=list, max_length=50, description="any of these brands")
    min_price: float | None = Field(default=None, ge=0, le=1e12)
    max_price: float | None = Field(default=None, ge=0, le=1e12)
    in_stock: bool = Field(default=False, description="only products in stock")

    @model_validator(mode="after")
    def _price_range(self) -> Filters:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("min_price must not be above max_price")
        return self


class SearchQuery(Filters):
    """A search by photo, by words, or both; the JSON form of `POST /api/v1/search`."""

    text: str | None = Field(default=None, max_length=MAX_TEXT, description="what the shopper typed")
    image_base64: str | None = Field(default=None, description="the photo's bytes (JPEG, PNG or WebP), base64")
    weight: float = Field(default=0.5, ge=0.0, le=1.0, description="with a photo and words: the words' share")
    top_k: int = Field(default=12, ge=1, le=MAX_TOP_K)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    min_score: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="the semantic score a match needs; unset: the threshold calibrated on this shop's catalog",
    )
    facets: bool = Field(default=False, description="also count categories and brands of the catalog under the filters")


class Hit(BaseModel):
    sku: str
    title: str
    price: float | None
    currency: str | None
    category: str | None
    brand: str | None
    in_stock: bool
    score: float = Field(description="what the results are ordered by: the semantic score plus the lexical share")
    image_url: str | None = Field(description="path of the best-matching photo on this server")
    description: str = ""
    semantic: float = Field(default=0.0, description="weighted cosine similarity of the photo and/or words")
    lexical: float = Field(default=0.0, description="BM25 of the words, relative to the best lexical match (0..1)")
    code_match: bool = Field(default=False, description="the words named this product's SKU, GTIN or MPN")


class FacetCount(BaseModel):
    value: str
    count: int


class SearchResult(BaseModel):
    hits: list[Hit]
    took_ms: float
    embed_ms: float = 0.0
    vector_ms: float = 0.0
    join_ms: float = 0.0
    kinds: list[str] = Field(default_factory=list, description="the similarities the score is made of")
    notes: list[str] = Field(default_factory=list)
    threshold: float | None = Field(default=None, description="the semantic score a match needed")
    closest: list[Hit] = Field(
        default_factory=list, description="with no match: the nearest products, to be shown as such, not as matches"
    )
    facets: dict[str, list[FacetCount]] = Field(
        default_factory=dict, description="with `facets`: category and brand counts of the catalog under the filters"
    )


class ProductImage(BaseModel):
    url: str
    sha256: str
    width: int
    height: int


class Product(BaseModel):
    sku: str
    title: str
    description: str
    category: str | None
    brand: str | None
    price: float | None
    currency: str | None
    in_stock: bool
    attributes: dict[str, Any]
    images: list[ProductImage]
    image_url: str | None
    updated_at: datetime | None = None


class ProductPage(BaseModel):
    products: list[Product]
    total: int
    offset: int
    limit: int


class Facets(BaseModel):
    categories: list[str]
    brands: list[str]
    min_price: float | None
    max_price: float | None
    category_counts: list[FacetCount] = Field(
        default_factory=list, description="products per category under the other filters (not the category one)"
    )
    brand_counts: list[FacetCount] = Field(
        default_factory=list, description="products per brand under the other filters (not the brand one)"
    )


class Counts(BaseModel):
    products: int
    images: int
    unsynced: int


class Health(BaseModel):
    status: str = Field(description="ok, or starting while the search model loads")
    ready: bool = Field(description="the stores are open and searches are answered")
    model_loaded: bool
    embedder: str
    fallback_reason: str | None = None
    collection: str
    counts: Counts
    vectors: int
    jobs_waiting: int
    schedule: str | None = None
    version: str
    server_id: str


class IngestUrl(BaseModel):
    """`POST /api/v1/ingest` as JSON: a catalog URL, or a file on the server's own disk."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2000)
    path: str | None = Field(default=None, max_length=4000, description="a catalog file on the server's machine")
    prune: bool = Field(default=False, description="remove products that are not in this catalog")
    force_prune: bool = Field(
        default=False,
        description="prune even when rows could not be read and their SKUs are unknown (implies prune); "
        "without it such a run removes nothing and reports a prune_skipped problem",
    )

    @model_validator(mode="after")
    def _one_source(self) -> IngestUrl:
        if bool(self.url) == bool(self.path):
            raise ValueError("give exactly one of url or path")
        return self


class Job(BaseModel):
    id: str
    kind: str
    trigger: str
    source: str
    status: str = Field(description="queued, running, succeeded, partial, failed or interrupted")
    finished: bool
    done: int = Field(description="products done")
    total: int
    images_embedded: int
    images_per_second: float | None
    counts: dict[str, Any]
    problem_count: int
    problems: list[dict[str, Any]]
    run_id: int | None
    message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Run(BaseModel):
    id: int
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    trigger: str
    status: str
    source: str
    embedder: str
    rows_total: int
    new: int
    changed: int
    unchanged: int
    pruned: int
    failed: int
    images_embedded: int
    texts_embedded: int
    error_count: int
    message: str | None


class UploadPreview(BaseModel):
    rows_total: int
    rows_ok: int
    rows_with_errors: int
    images_in_upload: int
    skipped_files: list[str]
    problems: list[dict[str, Any]]
    sample: list[dict[str, Any]]


class Stats(BaseModel):
    embedder: str
    collection: str
    sql: Counts
    qdrant: dict[str, int]
    consistent: bool


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class AuditDuplicate(BaseModel):
    skus: list[str] = Field(description="different products whose photos are near-identical")
    score: float = Field(description="the weakest photo similarity joining the group")


class AuditSuggestion(BaseModel):
    sku: str
    category: str
    confidence: float


class AuditMismatch(BaseModel):
    sku: str
    listed: str | None
    suggested: str | None
    confidence: float
    reason: str


class Audit(BaseModel):
    """`GET /api/v1/audit`: the JSON contract of `shoplens audit --json` too."""

    duplicates: list[AuditDuplicate]
    category_suggestions: list[AuditSuggestion]
    mismatches: list[AuditMismatch]
    products: int
    duplicate_threshold: float | None
    notes: list[str]
    seconds: float


class AuditAccept(BaseModel):
    """Accept category suggestions: the named SKUs, or every one at or above a confidence."""

    model_config = ConfigDict(extra="forbid")

    skus: list[str] | None = Field(default=None, max_length=100_000)
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one(self) -> AuditAccept:
        if (self.skus is None) == (self.min_confidence is None):
            raise ValueError("send either skus or min_confidence")
        return self


class AuditAccepted(BaseModel):
    changed: dict[str, str] = Field(description="SKU → the category written")
    skipped: dict[str, str] = Field(description="SKU → why it was not changed")

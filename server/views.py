"""ShopLens' own objects as API bodies: the one place that turns a product or a hit into JSON."""

from __future__ import annotations

from pathlib import Path

from server import schemas
from services.catalog.models import IngestRun, Product
from services.search import SearchHit, SearchResponse

IMAGES_PATH = "/api/v1/images"


def image_url(sha256: str) -> str:
    return f"{IMAGES_PATH}/{sha256}"


def media_url(path: Path | None) -> str | None:
    """Media files are named by their content hash, which is how the API names images."""
    return image_url(path.stem) if path is not None else None


def hit(h: SearchHit) -> schemas.Hit:
    return schemas.Hit(
        sku=h.sku,
        title=h.title,
        price=h.price,
        currency=h.currency,
        category=h.category,
        brand=h.brand,
        in_stock=h.in_stock,
        score=round(h.score, 6),
        image_url=media_url(h.image),
        description=h.description,
        semantic=round(h.semantic, 6),
        lexical=round(h.lexical, 6),
        code_match=h.code_match,
    )


def search_result(response: SearchResponse) -> schemas.SearchResult:
    return schemas.SearchResult(
        hits=[hit(h) for h in response.hits],
        took_ms=round(response.took_ms, 2),
        embed_ms=round(response.embed_ms, 2),
        vector_ms=round(response.vector_ms, 2),
        join_ms=round(response.join_ms, 2),
        kinds=response.kinds,
        notes=response.notes,
        threshold=None if response.threshold is None else round(response.threshold, 6),
        closest=[hit(h) for h in response.closest],
        facets={
            key: [schemas.FacetCount(value=value, count=count) for value, count in counts]
            for key, counts in response.facets.items()
        },
    )


def product(p: Product) -> schemas.Product:
    images = [
        schemas.ProductImage(url=image_url(i.sha256), sha256=i.sha256, width=i.width, height=i.height) for i in p.images
    ]
    return schemas.Product(
        sku=p.sku,
        title=p.title,
        description=p.description or "",
        category=p.category,
        brand=p.brand,
        price=None if p.price is None else float(p.price),
        currency=p.currency,
        in_stock=p.in_stock,
        attributes=dict(p.attributes or {}),
        images=images,
        image_url=images[0].url if images else None,
        updated_at=p.updated_at,
    )


def run(r: IngestRun) -> schemas.Run:
    seconds = (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else None
    return schemas.Run(
        id=r.id,
        started_at=r.started_at,
        finished_at=r.finished_at,
        seconds=None if seconds is None else round(seconds, 1),
        trigger=r.trigger,
        status=r.status,
        source=r.source,
        embedder=r.embedder,
        rows_total=r.rows_total,
        new=r.new,
        changed=r.changed,
        unchanged=r.unchanged,
        pruned=r.pruned,
        failed=r.failed,
        images_embedded=r.images_embedded,
        texts_embedded=r.texts_embedded,
        error_count=r.error_count,
        message=r.message,
    )

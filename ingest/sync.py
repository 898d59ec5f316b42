"""Bring Qdrant in line with SQL for a set of products: the writer stage of ingestion.

SQL is the source of truth. For each product we know the points it should have (ids derived
from content) and their payload; we embed only points Qdrant lacks, overwrite payloads of the
rest, delete the product's other points, and only then record the product as synced. A run
killed anywhere leaves products marked pending, and the next run finishes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import bindparam

from ingest.faults import checkpoint
from ingest.records import VARIANT_PRICES, RowError
from services.catalog.models import Product
from services.catalog.store import CatalogStore
from services.embedders.base import Embedder, EmbedError
from services.images import ImageError, ImageLimits, decode_for_model
from services.lexical import lexical_text, product_codes
from services.media import MediaStore
from services.vectors import (
    IMAGE,
    TEXT,
    PointData,
    VectorStore,
    image_point_id,
    text_point_id,
)

log = logging.getLogger(__name__)
_PRODUCTS = Product.__table__
_MARK_SYNCED = (
    _PRODUCTS.update().where(_PRODUCTS.c.id == bindparam("product_id")).values(synced_state=bindparam("state"))
)


def payload_of(product: Product) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "category": product.category,
        "brand": product.brand,
        "price": payload_price(product),
        "currency": product.currency,
        "in_stock": bool(product.in_stock),
    }


def payload_price(product: Product) -> float | list[float] | None:
    """The product's price, or every price its variants sell at (lowest first): a range filter
    matches a point when any element of a list is in range (both backends), so a shopper looking
    for 20-30 finds a shirt sold at 15 and 25. SQL keeps the lowest, for sorting and display."""
    price = None if product.price is None else float(product.price)
    raw = (product.attributes or {}).get(VARIANT_PRICES)
    if not isinstance(raw, str):
        return price
    try:
        listed = json.loads(raw)
        prices = {float(p) for p in listed if p is not None} if isinstance(listed, list) else set()
    except (ValueError, TypeError):
        return price  # a merchant's own column of that name, not ours: the price alone
    prices |= {price} if price is not None else set()
    return sorted(prices) if len(prices) > 1 else price


def text_sha(product: Product) -> str:
    return hashlib.sha256(product.text.encode()).hexdigest()


def expected_points(product: Product) -> dict[str, dict[str, Any]]:
    """Point id → payload, for every point this product should have."""
    base = payload_of(product)
    points = {
        image_point_id(product.sku, img.sha256): {
            **base,
            "kind": IMAGE,
            "image_sha": img.sha256,
            "position": img.position,
        }
        for img in product.images
    }
    points[text_point_id(product.sku, text_sha(product))] = {**base, "kind": TEXT, **lexical_payload(product)}
    return points


def lexical_payload(product: Product) -> dict[str, Any]:
    """What the lexical side of search reads (services/lexical.py): on the text point only."""
    # every variant's price and stock are for filters and display, not words a shopper types
    attributes = {k: v for k, v in (product.attributes or {}).items() if k not in _NOT_WORDS}
    return {
        "lexical": lexical_text(
            product.sku, product.title, product.brand, product.category, attributes, product.description or ""
        ),
        "codes": product_codes(product.sku, attributes),
    }


_NOT_WORDS = frozenset({VARIANT_PRICES, "variant_stock"})


def desired_state(product: Product, identity_key: str) -> str:
    blob = json.dumps([identity_key, sorted(expected_points(product).items())], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class SyncResult:
    synced: int = 0
    images_embedded: int = 0
    images_reused: int = 0  # photo vectors taken from the collection of the text model this one replaced
    texts_embedded: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass
class Embedding:
    """A batch embedded and not yet written: what `VectorSync.write` needs."""

    products: list[Product]
    states: dict[str, str]  # sku -> the synced_state its written vectors give
    wanted: dict[str, dict[str, dict[str, Any]]]  # sku -> point id -> payload
    present: set[str]  # point ids the collection held before
    points: list[PointData]  # new points
    failed: set[str]  # skus left pending (an image or text that could not be embedded)
    result: SyncResult


class VectorSync:
    def __init__(
        self,
        catalog: CatalogStore,
        vectors: VectorStore,
        embedder: Embedder,
        media: MediaStore,
        limits: ImageLimits,
        photo_vectors_from: Callable[[], VectorStore | None] | None = None,
    ):
        self.catalog, self.vectors, self.embedder, self.media, self.limits = catalog, vectors, embedder, media, limits
        self._photo_vectors_from = photo_vectors_from  # asked once, at the first photo to embed
        self._donor: VectorStore | None = None
        self._donor_asked = False

    def _reusable(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Photo vectors these point ids already have in the collection this identity took over
        from (same photo model, another text model): reused, not embedded again."""
        if not ids or self._photo_vectors_from is None:
            return {}
        if not self._donor_asked:
            self._donor_asked = True
            self._donor = self._photo_vectors_from()
        if self._donor is None:
            return {}
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 512):
            for record in self._donor.backend.retrieve(list(ids[start : start + 512]), with_vectors=True):
                vector = record.vectors.get(IMAGE)
                if vector is not None and len(vector) == self.vectors.identity.image_dim:
                    found[record.id] = np.asarray(vector, dtype=np.float32)
        if not found:  # taken over already, or new photos: the rest of this run does not ask again
            self._donor = None
        return found

    @property
    def identity_key(self) -> str:
        return self.vectors.sync_key

    def needs_sync(self, product: Product) -> bool:
        return product.synced_state != desired_state(product, self.identity_key)

    def sync(
        self,
        products: Sequence[Product],
        prepared: dict[str, Any] | None = None,
        rows: dict[str, int] | None = None,
    ) -> SyncResult:
        """Write the vectors of these products (SQL rows already committed)."""
        embedding = self.embed(products, prepared, rows)
        return self.write(embedding) if embedding is not None else SyncResult()

    def embed(
        self,
        products: Sequence[Product],
        prepared: dict[str, Any] | None = None,
        rows: dict[str, int] | None = None,
    ) -> Embedding | None:
        """The model's half of `sync`: the points these products lack, embedded (None: none to
        sync). Nothing is written, so a run can embed a batch while the one before it is written.

        `prepared`: photos the decode threads already made ready for the embedder, by sha256;
        any other photo is read from media and prepared here."""
        prepared = prepared or {}
        rows = rows or {}
        result = SyncResult()
        states = {p.sku: desired_state(p, self.identity_key) for p in products}
        products = [p for p in products if p.synced_state != states[p.sku]]
        if not products:
            return None
        wanted = {p.sku: expected_points(p) for p in products}
        all_ids = [pid for points in wanted.values() for pid in points]
        present = self.vectors.existing_ids(all_ids)

        image_jobs: list[tuple[Product, str, Any]] = []  # (product, point id, ProductImage)
        text_jobs: list[tuple[Product, str]] = []
        failed: set[str] = set()
        for product in products:
            for img in product.images:
                pid = image_point_id(product.sku, img.sha256)
                if pid not in present:
                    image_jobs.append((product, pid, img))
            tid = text_point_id(product.sku, text_sha(product))
            if tid not in present:
                text_jobs.append((product, tid))

        new_points: list[PointData] = []
        reused = self._reusable([pid for _, pid, _ in image_jobs])
        for product, pid, _ in image_jobs:
            if pid in reused:
                new_points.append(PointData(pid, IMAGE, reused[pid], wanted[product.sku][pid]))
                result.images_reused += 1
        image_jobs = [job for job in image_jobs if job[1] not in reused]

        def fail(product: Product, field: str, message: str, code: str) -> None:
            failed.add(product.sku)
            result.errors.append(RowError(rows.get(product.sku, 0), field, message, product.sku, code))

        inputs: list[Any] = []
        ready_jobs = []
        for product, pid, img in image_jobs:
            ready = prepared.get(img.sha256)
            if ready is None:
                try:
                    picture, _ = decode_for_model(self.media.read(img.media_path), self.limits)
                except (OSError, ImageError) as exc:
                    fail(product, "image", f"stored copy {img.media_path} unusable: {exc}", "bad_image")
                    continue
                try:
                    ready = self.embedder.prepare_image(picture)
                except Exception as exc:  # e.g. a photo DashScope's size limit cannot take
                    fail(product, "image", f"{img.source}: embedding failed: {exc}", EmbedError.code)
                    continue
            inputs.append(ready)
            ready_jobs.append((product, pid))
        embedded = self.embedder.embed_prepared(inputs)
        for index, (product, pid) in enumerate(ready_jobs):
            if not embedded.ok(index):
                source = next((i.source for i in product.images if image_point_id(product.sku, i.sha256) == pid), pid)
                fail(product, "image", f"{source}: embedding failed: {embedded.errors[index]}", EmbedError.code)
                continue
            new_points.append(PointData(pid, IMAGE, embedded.vectors[index], wanted[product.sku][pid]))
            result.images_embedded += 1

        texts = self.embedder.embed_texts([p.text for p, _ in text_jobs])
        for index, (product, tid) in enumerate(text_jobs):
            if not texts.ok(index):
                fail(product, "title", f"text embedding failed: {texts.errors[index]}", EmbedError.code)
                continue
            new_points.append(PointData(tid, TEXT, texts.vectors[index], wanted[product.sku][tid]))
            result.texts_embedded += 1
        return Embedding(list(products), states, wanted, present, new_points, failed, result)

    def write(self, embedding: Embedding) -> SyncResult:
        """The store's half of `sync`: the new points, the payloads of those already present, the
        products' stale points deleted, and only then their SQL rows marked synced. Safe to repeat."""
        e = embedding
        self.vectors.upsert(e.points)
        checkpoint("after-upsert")
        self.vectors.set_payloads(
            {pid: payload for points in e.wanted.values() for pid, payload in points.items() if pid in e.present}
        )
        done = [p for p in e.products if p.sku not in e.failed]
        self.vectors.delete_stale([p.sku for p in done], [pid for p in done for pid in e.wanted[p.sku]])
        checkpoint("after-delete-stale")
        if done:  # one executemany, not a statement per product (a batch's round trips add up)
            with self.catalog.session() as session:
                session.execute(_MARK_SYNCED, [{"product_id": p.id, "state": e.states[p.sku]} for p in done])
            for product in done:
                product.synced_state = e.states[product.sku]
        checkpoint("after-synced")
        e.result.synced = len(done)
        return e.result

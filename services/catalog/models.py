"""SQL schema: SQL is the source of truth; Qdrant holds vectors derived from it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[dict[str, Any]]: JSON}


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(128), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(200), index=True)
    brand: Mapped[str | None] = mapped_column(String(200), index=True)
    price: Mapped[Decimal | None] = mapped_column(Numeric(14, 3))  # three decimals: KWD, BHD, OMR, JOD, TND
    currency: Mapped[str | None] = mapped_column(String(3))
    in_stock: Mapped[bool] = mapped_column(default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Fingerprint of the catalog row as last ingested: an equal row costs nothing on re-runs.
    row_hash: Mapped[str] = mapped_column(String(64))
    # Fingerprint of what Qdrant holds for this product (embedder, images, text, payload);
    # differs from the desired one until the vectors are written, so a killed run resumes.
    synced_state: Mapped[str | None] = mapped_column(String(64), default=None)
    # Runs in a row whose image download failed, and when the next run may try again: a failed
    # image is fetched again by later runs until it lands or the row changes.
    image_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    images: Mapped[list[ProductImage]] = relationship(
        back_populates="product", cascade="all, delete-orphan", order_by="ProductImage.position", lazy="selectin"
    )

    @property
    def text(self) -> str:
        """What a product's text vector is made of: the title with its brand, which shoppers type
        ("罗技鼠标", "nike running shoe") and only the model can match across languages (Chinese
        queries on the sample shop: R@1 0.60 with it, 0.52 without; English 0.95 and 0.91), then
        the description. Not the category: the audit asks the words whether the category is right."""
        head = f"{self.title} ({self.brand})" if self.brand else self.title
        return f"{head}. {self.description}".strip() if self.description else head


class ProductImage(Base):
    __tablename__ = "product_images"
    __table_args__ = (UniqueConstraint("product_id", "sha256", name="uq_product_image_sha"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(2000))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    media_path: Mapped[str] = mapped_column(String(300))  # relative to the media folder
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)

    product: Mapped[Product] = relationship(back_populates="images")


class ImageSource(Base):
    """What an image URL served when a run last fetched it, so later runs ask the server whether
    it changed (If-None-Match / If-Modified-Since) instead of downloading every image again, and a
    changed body behind the same URL changes its product's fingerprint."""

    __tablename__ = "image_sources"

    # sha256 of the URL: a URL may be longer than an index key can be
    url_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(500), default=None)
    last_modified: Mapped[str | None] = mapped_column(String(100), default=None)
    sha256: Mapped[str] = mapped_column(String(64))  # of the body it served
    media_path: Mapped[str] = mapped_column(String(300))  # that body's copy, relative to the media folder
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IngestRun(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trigger: Mapped[str] = mapped_column(String(32), default="cli")
    source: Mapped[str] = mapped_column(String(2000), default="")
    embedder: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(16), default="running")
    rows_total: Mapped[int] = mapped_column(default=0)
    new: Mapped[int] = mapped_column(default=0)
    changed: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    pruned: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    images_embedded: Mapped[int] = mapped_column(default=0)
    texts_embedded: Mapped[int] = mapped_column(default=0)
    error_count: Mapped[int] = mapped_column(default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(default=list)  # the first MAX_STORED_ERRORS
    message: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """A unit of background work (an ingest) that the API accepted; SQL so every replica sees it.

    `server_id` names the server process that accepted it and runs it (uploaded files live on its
    disk); any replica answers `GET /api/v1/jobs/{id}` from this row.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="ingest")
    trigger: Mapped[str] = mapped_column(String(32), default="api")
    source: Mapped[str] = mapped_column(String(2000), default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    server_id: Mapped[str] = mapped_column(String(64), default="")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id", ondelete="SET NULL"), default=None)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    images_embedded: Mapped[int] = mapped_column(default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    problems: Mapped[list[dict[str, Any]]] = mapped_column(default=list)  # the first MAX_STORED_ERRORS
    problem_count: Mapped[int] = mapped_column(default=0)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class StoreMeta(Base):
    """Facts about the store that must be known without loading a model (e.g. embedder identities)."""

    __tablename__ = "store_meta"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

"""The schema of the last release before migrations, frozen as SQLAlchemy Core, and a store of it.

A copy of that release's models (which `create_all` turned into tables), not derived from today's
models: the migration tests must upgrade what users really have on disk, whatever the models
become later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sku", sa.String(128), nullable=False, unique=True),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("category", sa.String(200), index=True),
    sa.Column("brand", sa.String(200), index=True),
    sa.Column("price", sa.Numeric(14, 2)),
    sa.Column("currency", sa.String(3)),
    sa.Column("in_stock", sa.Boolean, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("synced_state", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

product_images = sa.Table(
    "product_images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("source", sa.String(2000), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("media_path", sa.String(300), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.UniqueConstraint("product_id", "sha256", name="uq_product_image_sha"),
)

ingest_runs = sa.Table(
    "ingest_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("source", sa.String(2000), nullable=False),
    sa.Column("embedder", sa.String(300), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows_total", sa.Integer, nullable=False),
    sa.Column("new", sa.Integer, nullable=False),
    sa.Column("changed", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("pruned", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("images_embedded", sa.Integer, nullable=False),
    sa.Column("texts_embedded", sa.Integer, nullable=False),
    sa.Column("error_count", sa.Integer, nullable=False),
    sa.Column("errors", sa.JSON, nullable=False),
    sa.Column("message", sa.Text),
)

TABLES = (products, product_images, ingest_runs)


def create_v1_store(url: str, n_products: int = 5) -> None:
    """Create the old schema as that release's `create_all` did and fill it with distinctive rows."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
            for i in range(n_products):
                product_id = conn.execute(
                    products.insert().returning(products.c.id),
                    {
                        "sku": f"OLD-{i:03d}",
                        "title": f"Old product {i}",
                        "description": "" if i == 0 else f"Made before migrations, number {i}.",
                        "category": None if i == 1 else ["Shoes", "Bags"][i % 2],
                        "brand": ["Acme", "Globex", None][i % 3],
                        "price": None if i == 2 else Decimal(f"{10 + i}.{i:02d}"),
                        "currency": "EUR",
                        "in_stock": i % 2 == 0,
                        "attributes": {"color": ["red", "green"][i % 2], "sizes": [38, 39 + i], "note": "é ü"},
                        "row_hash": f"{i:02d}" * 32,
                        "synced_state": None if i == 3 else f"{i + 50:02d}" * 32,  # one product never synced
                        "created_at": start + timedelta(days=i),
                        "updated_at": start + timedelta(days=i, hours=1),
                    },
                ).scalar_one()
                for position in range(i % 3 + 1):
                    conn.execute(
                        product_images.insert(),
                        {
                            "product_id": product_id,
                            "position": position,
                            "source": f"https://shop.example/img/{i}/{position}.jpg",
                            "sha256": f"{i:02d}{position:02d}" * 16,
                            "media_path": f"ab/{i:02d}{position:02d}.jpg",
                            "width": 320 + position,
                            "height": 240 + i,
                        },
                    )
            for r, status in enumerate(["ok", "failed", "running"]):
                conn.execute(
                    ingest_runs.insert(),
                    {
                        "started_at": start + timedelta(hours=r),
                        "finished_at": None if status == "running" else start + timedelta(hours=r, minutes=5),
                        "trigger": ["cli", "schedule", "api"][r],
                        "source": f"/data/catalog-{r}.csv",
                        "embedder": "openclip:ViT-B-32",
                        "status": status,
                        "rows_total": 10 + r,
                        "new": r,
                        "changed": r + 1,
                        "unchanged": r + 2,
                        "pruned": 0,
                        "failed": r,
                        "images_embedded": 7 * r,
                        "texts_embedded": 5 * r,
                        "error_count": r,
                        "errors": [{"row": k, "error": f"bad image {k}"} for k in range(r)],
                        "message": None if r == 0 else f"run {r}",
                    },
                )
    finally:
        engine.dispose()


def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the old tables, every column, in id order: what an upgrade must keep."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: [dict(row._mapping) for row in conn.execute(sa.select(table).order_by(table.c.id))]
                for table in TABLES
            }
    finally:
        engine.dispose()

"""Converts the Vendure demo catalog (products.csv + images/) into a ShopLens CSV catalog."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ingest.readers import CatalogError

COLUMNS = [
    "sku",
    "title",
    "description",
    "category",
    "brand",
    "price",
    "currency",
    "in_stock",
    "image",
    "slug",
    "category_path",
    "color",
    "variants",
]


def convert_vendure(assets_dir: Path, out: Path, currency: str = "USD") -> int:
    """Write `out`; returns the number of products. Variant rows (empty name) stay with their product."""
    source = assets_dir / "products.csv"
    if not source.is_file():
        candidates = list(assets_dir.glob("**/assets/products.csv"))
        if not candidates:
            raise CatalogError(f"no Vendure products.csv under {assets_dir}")
        source = candidates[0]
    images_dir = source.parent / "images"
    with source.open(newline="", encoding="utf-8") as fh:
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]
    products: list[dict[str, str]] = []
    for row in rows:
        if not row.get("name"):
            if products:
                products[-1]["variants"] = str(int(products[-1]["variants"]) + 1)
            continue
        facets = [f.split(":", 1) for f in row.get("facets", "").split("|") if ":" in f]
        categories = [v for k, v in facets if k == "category"]
        brands = [v for k, v in facets if k == "brand"]
        colors = [v for k, v in facets if k == "color"]
        images = [
            os.path.relpath((images_dir / name).resolve(), out.parent.resolve())
            for name in row.get("assets", "").split("|")
            if name
        ]
        products.append(
            {
                "sku": row["sku"],
                "title": row["name"],
                "description": row.get("description", ""),
                "category": categories[-1] if categories else "",
                "brand": brands[0] if brands else "",
                "price": row.get("price", ""),
                "currency": currency,
                "in_stock": "yes" if int(row.get("stockOnHand") or 0) > 0 else "no",
                "image": "|".join(images),
                "slug": row.get("slug", ""),
                "category_path": " > ".join(categories),
                "color": ", ".join(colors),
                "variants": "1",
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(products)
    return len(products)

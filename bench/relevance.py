"""Relevance of the hybrid search and the calibrated "no good match", on the Vendure sample with
the offline embedder (real weights), every variant measured in the same run:

- English text queries a shopper would type (bench/queries/vendure_en.csv): R@1/5/10 with the
  semantic score alone, with lexical scores added at several weights, and with rank fusion (RRF);
- every SKU typed exactly, in lower case, with a space for the dash and without separators: R@1;
- shopper-style photos (bench/augment.py, 3 per product) and fresh nonsense (noise photos, flat
  colours, scribbles; gibberish words never used in calibration, bench/queries/nonsense.csv):
  the share of nonsense answered "no good match" and the real queries kept at the threshold.

    .venv/bin/python -m bench.relevance [--cache ~/.cache/shoplens-bench]

Writes its section of BENCHMARKS.md ("## Relevance: hybrid search and no good match").
"""

from __future__ import annotations

import argparse
import csv
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import services.search as search_module
from bench.augment import augmented_queries
from bench.sections import write_section
from cli.samples import sample_catalog
from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from services.context import ShopLens
from services.lexical import lexical_query
from services.search import SearchFilters, SearchRequest
from services.settings import Settings
from services.vectors import close_embedded_clients

HEADING = "## Relevance: hybrid search and no good match"
QUERIES = Path(__file__).with_name("queries")
WEIGHTS = (0.0, 0.15, 0.3, 0.5)
RRF_K = 60


def english_queries() -> list[tuple[str, str]]:
    with (QUERIES / "vendure_en.csv").open(encoding="utf-8") as fh:
        return [(row["text"], row["expected_sku"]) for row in csv.DictReader(fh)]


def nonsense_words() -> list[str]:
    with (QUERIES / "nonsense.csv").open(encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


def nonsense_photos(seed: int = 2024, size: int = 320) -> list[Image.Image]:
    """Other nonsense than calibration's (another seed, other shapes and colours)."""
    rng = np.random.default_rng(seed)
    out = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(6)]
    out += [Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(8)]
    for k in range(10):
        canvas = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(180, 256, 3)))
        draw = ImageDraw.Draw(canvas)
        for _ in range(2 + k):
            xy = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(5)]
            draw.line(xy, fill=tuple(int(v) for v in rng.integers(0, 120, 3)), width=int(rng.integers(1, 6)))
        out.append(canvas)
    return out


def ranks(run: Callable[[str], list[str]], queries: list[tuple[str, str]]) -> list[int | None]:
    found = []
    for text, sku in queries:
        skus = run(text)
        found.append(skus.index(sku) + 1 if sku in skus else None)
    return found


def recall(found: list[int | None], k: int) -> float:
    return sum(r is not None and r <= k for r in found) / len(found)


def measure(cache: Path) -> dict[str, object]:
    catalog = sample_catalog(cache)
    home = Path(tempfile.mkdtemp(prefix="shoplens-relevance-"))
    app = ShopLens(Settings(_env_file=None, home=home, embedder="offline", torch_threads=2))
    try:
        ingestor_for(app).ingest(read_catalog(catalog))
        thresholds = app.search.thresholds()
        results: dict[str, object] = {"thresholds": thresholds.details if thresholds else None}
        english = english_queries()

        def by(weight: float, min_score: float | None = -1.0) -> Callable[[str], list[str]]:
            def run(text: str) -> list[str]:
                search_module.LEXICAL_WEIGHT = weight
                hits = app.search.search(SearchRequest(text=text, top_k=10, min_score=min_score)).hits
                return [h.sku for h in hits]

            return run

        default_weight = search_module.LEXICAL_WEIGHT
        text_rows = {}
        for weight in WEIGHTS:
            found = ranks(by(weight), english)
            text_rows[f"semantic + {weight:g} × lexical" if weight else "semantic only"] = found

        def rrf(text: str) -> list[str]:
            semantic = by(0.0)(text)
            lexical = [
                h.payload["sku"]
                for h in app.vectors.lexical_search(lexical_query(text), SearchFilters().for_kind("text"), 30)
            ]
            score: dict[str, float] = {}
            for ranking in (semantic, lexical):
                for position, sku in enumerate(ranking):
                    score[sku] = score.get(sku, 0.0) + 1.0 / (RRF_K + position + 1)
            return sorted(score, key=lambda s: -score[s])[:10]

        text_rows[f"RRF (k={RRF_K}) of semantic and lexical"] = ranks(rrf, english)
        search_module.LEXICAL_WEIGHT = default_weight
        results["text"] = {
            name: {f"R@{k}": round(recall(found, k), 3) for k in (1, 5, 10)} for name, found in text_rows.items()
        }
        at_threshold = ranks(by(default_weight, None), english)
        results["text_at_threshold"] = {f"R@{k}": round(recall(at_threshold, k), 3) for k in (1, 5, 10)}

        skus = [row.sku for row in read_catalog(catalog).records]
        forms = {
            "as written": lambda s: s,
            "lower case": str.lower,
            "space for the dash": lambda s: re.sub(r"[-./]", " ", s),
            "no separators": lambda s: re.sub(r"[-./ ]", "", s),
        }
        results["sku"] = {
            name: round(recall(ranks(by(default_weight, None), [(form(s), s) for s in skus]), 1), 3)
            for name, form in forms.items()
        }
        words = nonsense_words()
        results["nonsense_words"] = round(
            sum(not app.search.search(SearchRequest(text=w, top_k=10)).hits for w in words) / len(words), 3
        )

        photos = []
        for index, record in enumerate(read_catalog(catalog).records):
            source = (catalog.parent / record.images[0]) if record.images else None
            if source is None:
                continue
            with Image.open(source) as image:
                for query in augmented_queries(image.convert("RGB"), 7, index):
                    photos.append((query, record.sku))

        def photo_ranks(min_score: float | None) -> list[int | None]:
            out = []
            for image, sku in photos:
                request = SearchRequest(image=image, top_k=10, min_score=min_score)
                hits = [h.sku for h in app.search.search(request).hits]
                out.append(hits.index(sku) + 1 if sku in hits else None)
            return out

        all_photos, kept_photos = photo_ranks(-1.0), photo_ranks(None)
        results["photo"] = {
            "queries": len(photos),
            "ranking": {f"R@{k}": round(recall(all_photos, k), 3) for k in (1, 5, 10)},
            "at_threshold": {f"R@{k}": round(recall(kept_photos, k), 3) for k in (1, 5, 10)},
        }
        noise = nonsense_photos()
        results["nonsense_photos"] = round(
            sum(not app.search.search(SearchRequest(image=img, top_k=10)).hits for img in noise) / len(noise), 3
        )
        started = time.perf_counter()
        app.search.calibrate(force=True)
        results["calibration_seconds"] = round(time.perf_counter() - started, 2)
        results["queries"] = {"english": len(english), "nonsense_words": len(words), "nonsense_photos": len(noise)}
        return results
    finally:
        app.close()
        close_embedded_clients()


def markdown(results: dict[str, object]) -> str:
    text = results["text"]
    assert isinstance(text, dict)
    lines = [
        HEADING,
        "",
        "Vendure sample (54 products), offline embedder (ImageNet MobileNetV2 photos, multilingual-e5-small",
        "texts), all in one run of `python -m bench.relevance`. Text queries: bench/queries/vendure_en.csv "
        f"({results['queries']['english']} queries a shopper would type); ranking measured without a threshold.",  # type: ignore[index]
        "",
        "| text ranking | R@1 | R@5 | R@10 |",
        "|---|---|---|---|",
    ]
    for name, row in text.items():
        lines.append(f"| {name} | {row['R@1']} | {row['R@5']} | {row['R@10']} |")
    kept = results["text_at_threshold"]
    lines += [
        f"| the default (semantic + {search_module.LEXICAL_WEIGHT:g} × lexical) at the calibrated threshold | "
        f"{kept['R@1']} | {kept['R@5']} | {kept['R@10']} |",  # type: ignore[index]
        "",
        "| a SKU typed … | R@1 |",
        "|---|---|",
    ]
    for name, value in results["sku"].items():  # type: ignore[union-attr]
        lines.append(f"| {name} | {value} |")
    photo = results["photo"]
    assert isinstance(photo, dict)
    lines += [
        "",
        f"| photo queries ({photo['queries']}: crop, turn, colour, busy backdrop, JPEG q40) | R@1 | R@5 | R@10 |",
        "|---|---|---|---|",
        f"| ranking | {photo['ranking']['R@1']} | {photo['ranking']['R@5']} | {photo['ranking']['R@10']} |",
        f"| at the calibrated threshold | {photo['at_threshold']['R@1']} | {photo['at_threshold']['R@5']} | "
        f"{photo['at_threshold']['R@10']} |",
        "",
        '| nonsense answered "no good match" | share |',
        "|---|---|",
        f"| gibberish words ({results['queries']['nonsense_words']}, none used in calibration) | "  # type: ignore[index]
        f"{results['nonsense_words']} |",
        f"| noise, flat colours, scribbles ({results['queries']['nonsense_photos']}, another seed than "  # type: ignore[index]
        f"calibration's) | {results['nonsense_photos']} |",
        "",
        f"Calibration (at each ingest that changes the catalog by 10 % or more) took "
        f"{results['calibration_seconds']} s. Its measurements: `{results['thresholds']}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relevance")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoplens-bench")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    results = measure(args.cache)
    section = markdown(results)
    print(section)
    write_section(section, args.out, HEADING)


if __name__ == "__main__":
    main()

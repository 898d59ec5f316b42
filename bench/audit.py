"""The catalog audit (services/audit.py) on a damaged copy of the Vendure sample, offline
embedder (real weights), beside a plain nearest-neighbour vote measured in the same run; then
its speed on synthetic vectors written straight into the embedded vector store.

The damage, drawn afresh in each of TRIALS trials (the store is built once, with a copied photo
of every product under a new SKU; a trial keeps 10 % of those copies and hides the rest):
- 10 % of the products lose their category (category suggestions: the right one first?);
- 10 % get another category (mismatches: precision and recall of the flagged products);
- 10 % are copied under a new SKU, the photo re-encoded, resized, re-cropped or recoloured
  (duplicates: recall and precision of the copied pairs).

    .venv/bin/python -m bench.audit [--cache ~/.cache/shoplens-bench] [--trials 40] [--speed 100000]

Writes its section of BENCHMARKS.md ("## Catalog audit").
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import tempfile
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from bench.sections import write_section
from cli.samples import sample_catalog
from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from services import audit as audit_module
from services.audit import Evidence, Listing, duplicate_groups, gather, judge, listings
from services.context import ShopLens
from services.embedders.base import EmbedderIdentity
from services.settings import Settings
from services.vectors import IMAGE, TEXT, PointData, VectorStore, close_embedded_clients, image_point_id, text_point_id

HEADING = "## Catalog audit"
TRIALS = 40
SHARE = 0.1
BASELINE_K = 5


def copy_photo(image: Image.Image, how: int, rng: random.Random) -> Image.Image:
    """A copycat's version of a photo (other parameters than the audit's own calibration)."""
    w, h = image.size
    if how == 1:
        scale = rng.uniform(0.3, 0.7)
        image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))))
    elif how == 2:
        m = [rng.uniform(0.02, 0.12) for _ in range(4)]
        image = image.crop((int(w * m[0]), int(h * m[1]), w - int(w * m[2]), h - int(h * m[3])))
    elif how == 3:
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.5))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=rng.randint(30, 70) if how == 0 else 85)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def damaged_catalog(source: Path, folder: Path) -> tuple[Path, dict[str, str]]:
    """The sample plus one copy of every product under COPY-<sku>; returns (catalog, copy -> original)."""
    rng = random.Random(5)
    with source.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    (folder / "copies").mkdir(parents=True, exist_ok=True)
    copies: dict[str, str] = {}
    extra = []
    for i, row in enumerate(rows):
        first = row["image"].split("|")[0]
        with Image.open(source.parent / first) as image:
            copy = copy_photo(image.convert("RGB"), i % 4, rng)
        path = folder / "copies" / f"copy-{i}.jpg"
        copy.save(path, "JPEG", quality=92)
        sku = f"COPY-{row['sku']}"
        copies[sku] = row["sku"]
        extra.append({**row, "sku": sku, "image": str(path)})
    for row in rows:
        row["image"] = "|".join(str(source.parent / ref) for ref in row["image"].split("|"))
    out = folder / "catalog.csv"
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + extra)
    return out, copies


def baseline_vote(item: Evidence, categories: dict[str, str | None]) -> str | None:
    """A plain nearest-neighbour vote: the majority of the 5 nearest categorised photos."""
    ranked = sorted(((s, categories[o]) for o, s in item.image.items() if categories.get(o)), reverse=True)
    votes = Counter(c for _, c in ranked[:BASELINE_K])
    if not votes:
        return None
    best = max(votes.values())
    return next(c for _, c in ranked if votes[c] == best)


def pairs_of(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in combinations(g, 2)}


def quality(app: ShopLens, originals: dict[str, str], trials: int) -> dict[str, object]:
    full = listings(app)
    base = sorted(s for s in full if s not in originals)
    categories = sorted({full[s].category for s in base if full[s].category})
    threshold, details = audit_module.duplicate_threshold(app, len(full), force=True)
    names = audit_module.category_names(app, categories)
    n = max(1, round(SHARE * len(base)))
    tally: Counter[str] = Counter()
    seconds = []
    for trial in range(trials):
        rng = random.Random(1000 + trial)
        shuffled = rng.sample(base, len(base))
        blank, wrong, copied = shuffled[:n], shuffled[n : 2 * n], shuffled[2 * n : 3 * n]
        listed = {s: full[s] for s in base}
        for s in blank:
            listed[s] = Listing(s, None, full[s].title, full[s].photos)
        for s in wrong:
            other = rng.choice([c for c in categories if c != full[s].category])
            listed[s] = Listing(s, other, full[s].title, full[s].photos)
        kept_copies = {f"COPY-{s}": s for s in copied}
        for c, s in kept_copies.items():
            listed[c] = Listing(c, full[s].category, full[c].title, full[c].photos)
        started = time.perf_counter()
        gathered = gather(app.vectors, listed, names)
        suggestions, mismatches = judge(gathered.evidence, listed)
        groups = duplicate_groups(gathered.evidence, threshold)
        seconds.append(time.perf_counter() - started)
        truth = {frozenset(p) for p in kept_copies.items()}
        found = pairs_of([g.skus for g in groups])
        tally["dup_true"] += len(truth)
        tally["dup_found"] += len(truth & found)
        tally["dup_predicted"] += len(found)
        tally["dup_correct"] += len(found & truth)
        suggested = {s.sku: s.category for s in suggestions}
        cats = {s: item.category for s, item in listed.items()}
        for s in blank:
            tally["blank"] += 1
            tally["suggest_right"] += suggested.get(s) == full[s].category
            tally["baseline_right"] += baseline_vote(gathered.evidence[s], cats) == full[s].category
        flagged = {m.sku for m in mismatches}
        tally["wrong"] += len(wrong)
        tally["mis_found"] += len(flagged & set(wrong))
        tally["mis_flagged"] += len(flagged)
        baseline_flagged = {
            s
            for s, item in listed.items()
            if item.category and (b := baseline_vote(gathered.evidence[s], cats)) and b != item.category
        }
        tally["base_found"] += len(baseline_flagged & set(wrong))
        tally["base_flagged"] += len(baseline_flagged)

    def ratio(a: str, b: str) -> float:
        return round(tally[a] / tally[b], 3) if tally[b] else 0.0

    return {
        "products": len(base),
        "categories": len(categories),
        "trials": trials,
        "per_trial": n,
        "threshold": round(threshold, 4),
        "threshold_details": details,
        "dup_recall": ratio("dup_found", "dup_true"),
        "dup_precision": ratio("dup_correct", "dup_predicted"),
        "suggest": ratio("suggest_right", "blank"),
        "suggest_baseline": ratio("baseline_right", "blank"),
        "mis_recall": ratio("mis_found", "wrong"),
        "mis_precision": ratio("mis_found", "mis_flagged"),
        "base_recall": ratio("base_found", "wrong"),
        "base_precision": ratio("base_found", "base_flagged"),
        "audit_seconds": round(float(np.median(seconds)), 3),
        "counts": dict(tally),
    }


def speed(products: int, home: Path, categories: int = 200, seed: int = 3) -> dict[str, object]:
    """Synthetic clustered vectors (one photo and one text per product) written straight into
    the embedded store, then the audit's gather-and-judge over all of them."""
    rng = np.random.default_rng(seed)
    image_dim, text_dim = 512, 384
    identity = EmbedderIdentity("bench", "audit-speed", image_dim, text_dim, False)
    settings = Settings(_env_file=None, home=home)
    store = VectorStore.from_settings(settings, identity)
    centres_i = rng.standard_normal((categories, image_dim)).astype(np.float32)
    centres_t = rng.standard_normal((categories, text_dim)).astype(np.float32)
    listed: dict[str, Listing] = {}
    started = time.perf_counter()
    for start in range(0, products, 2000):
        points = []
        for i in range(start, min(products, start + 2000)):
            c = int(rng.integers(categories))
            sku = f"P{i:07d}"
            listed[sku] = Listing(sku, None if i % 10 == 0 else f"c{c}", sku, 1)
            vi = centres_i[c] + 1.2 * rng.standard_normal(image_dim).astype(np.float32)
            vt = centres_t[c] + 1.2 * rng.standard_normal(text_dim).astype(np.float32)
            payload = {"sku": sku, "category": listed[sku].category}
            points.append(
                PointData(image_point_id(sku, "x"), IMAGE, vi / np.linalg.norm(vi), {**payload, "kind": IMAGE})
            )
            points.append(PointData(text_point_id(sku, "x"), TEXT, vt / np.linalg.norm(vt), {**payload, "kind": TEXT}))
        store.upsert(points)
    load = time.perf_counter() - started
    build = store.build_index()
    names = tuple(f"c{c}" for c in range(categories))  # the names searched as words (text zero-shot)
    as_queries = centres_t / np.linalg.norm(centres_t, axis=1, keepdims=True)
    started = time.perf_counter()
    gathered = gather(store, listed, audit_module.CategoryNames(names, as_queries))
    gather_s = time.perf_counter() - started
    started = time.perf_counter()
    suggestions, mismatches = judge(gathered.evidence, listed)
    duplicate_groups(gathered.evidence, 0.95)
    judge_s = time.perf_counter() - started
    store.close()
    close_embedded_clients()
    return {
        "products": products,
        "load_seconds": round(load, 1),
        "index_seconds": round(build.seconds, 1) if build else None,
        "gather_seconds": round(gather_s, 1),
        "judge_seconds": round(judge_s, 1),
        "searches": gathered.image_points + gathered.text_points,
        "suggestions": len(suggestions),
    }


def markdown(q: dict[str, object], s: dict[str, object] | None) -> str:
    lines = [
        HEADING,
        "",
        f"Vendure sample ({q['products']} products, {q['categories']} categories), offline embedder, "
        f"`python -m bench.audit`: {q['trials']} trials, each blanking the category of {q['per_trial']} products, "
        f"giving {q['per_trial']} another category and copying {q['per_trial']} photos (re-encoded, resized, "
        "re-cropped or recoloured) under new SKUs. The baseline, in the same run: the majority of the "
        f"{BASELINE_K} nearest photos' categories (a mismatch where it differs from the listed one).",
        "",
        "| | audit | plain nearest-neighbour vote | target |",
        "|---|---|---|---|",
        f"| category suggestions: right category first | {q['suggest']} | {q['suggest_baseline']} | ≥ 0.9 |",
        f"| mismatches: precision | {q['mis_precision']} | {q['base_precision']} | ≥ 0.7 |",
        f"| mismatches: recall | {q['mis_recall']} | {q['base_recall']} | ≥ 0.7 |",
        f"| duplicates: recall of copied pairs | {q['dup_recall']} | | ≥ 0.95 |",
        f"| duplicates: precision | {q['dup_precision']} | | ≥ 0.9 |",
        "",
        f"Duplicate threshold calibrated for this embedder: {q['threshold']} ({q['threshold_details']}). "
        f"One audit of the sample (gather, vote, group) took {q['audit_seconds']} s.",
        "",
    ]
    if s:
        lines += [
            f"Speed: {s['products']:,} synthetic products (one 512-d photo and one 384-d text vector each, 200 "
            f"categories, every tenth uncategorised) in the embedded store: {s['searches']:,} batched top-k searches "
            f"and the centroid pass took {s['gather_seconds']} s, the vote and grouping {s['judge_seconds']} s "
            f"(loading the vectors took {s['load_seconds']} s and building the index {s['index_seconds']} s, "
            "not part of an audit).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoplens-bench")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--speed", type=int, default=100_000, help="synthetic products for the speed figure; 0: none")
    parser.add_argument("--home", type=Path, help="reuse this home (the damaged catalog ingested once)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="shoplens-audit-"))
    catalog, originals = damaged_catalog(sample_catalog(args.cache), home / "damaged")
    app = ShopLens(Settings(_env_file=None, home=home, embedder="offline", torch_threads=2))
    try:
        ingestor_for(app).ingest(read_catalog(catalog))
        results = quality(app, originals, args.trials)
    finally:
        app.close()
        close_embedded_clients()
    print(results)
    fast = speed(args.speed, Path(tempfile.mkdtemp(prefix="shoplens-audit-speed-"))) if args.speed else None
    print(fast)
    section = markdown(results, fast)
    print(section)
    write_section(section, args.out, HEADING)


if __name__ == "__main__":
    main()

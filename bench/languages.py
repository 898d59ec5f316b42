"""Chinese and English shoppers on the sample shop (listed in English), with the offline embedder.

- `shoplens eval`'s own code (ingest/evaluate.py) on bench/queries/vendure_zh.csv and
  vendure_en.csv: R@1/5/10 and MRR of the ranking; beside it, in the same run, the lexical
  (BM25) ranking alone as the baseline a model that does not read Chinese falls back to.
- At the calibrated threshold: the share of queries answered, and answered with the right
  product first, with Chinese queries' own threshold and with the shared (Latin) one.
- Chinese and Latin gibberish never used in calibration: the share answered "no good match".
- How long a fresh process takes to embed its first query, beside `import numpy` alone.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.relevance import QUERIES, recall
from bench.sections import write_section
from cli.samples import sample_catalog
from ingest.evaluate import evaluate, local_shop, read_queries
from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from services.calibration import Thresholds, cjk_gibberish
from services.context import ShopLens
from services.lexical import lexical_query
from services.search import SearchFilters, SearchRequest
from services.settings import Settings
from services.vectors import close_embedded_clients

HEADING = "## Chinese and English shoppers"
SETS = {"Chinese": "vendure_zh.csv", "English": "vendure_en.csv"}
STARTS = 5
FIRST_QUERY = "\n".join(
    [
        "from services.embedders.offline import OfflineEmbedder",
        "OfflineEmbedder(device='cpu').embed_text('跑步鞋', query=True)",
    ]
)


def _answered(app: ShopLens, rows: list[tuple[str, str]]) -> dict[str, float]:
    """Share of queries answered at the threshold, and answered with the right product first."""
    answers = [app.search.search(SearchRequest(text=text, top_k=10)).hits for text, _ in rows]
    right = sum(bool(hits) and hits[0].sku == sku for hits, (_, sku) in zip(answers, rows, strict=True))
    return {"answered": round(sum(bool(h) for h in answers) / len(rows), 3), "right_first": round(right / len(rows), 3)}


def _start_seconds(code: str) -> float:
    times = []
    for _ in range(STARTS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def measure(cache: Path) -> dict[str, object]:
    catalog = sample_catalog(cache)
    home = Path(tempfile.mkdtemp(prefix="shoplens-languages-"))
    app = ShopLens(Settings(_env_file=None, home=home, embedder="offline", torch_threads=2))
    results: dict[str, object] = {"embedder": app.embedder.identity.describe()}
    try:
        ingestor_for(app).ingest(read_catalog(catalog))
        thresholds = app.search.thresholds()
        assert thresholds is not None
        results["thresholds"] = {"text": round(thresholds.text, 4), "text_cjk": round(thresholds.text_cjk or 0.0, 4)}
        for language, name in SETS.items():
            parsed = read_queries(QUERIES / name)
            rows = [(q.text or "", q.expected_sku) for q in parsed.queries]
            model = evaluate(local_shop(app), parsed.queries, QUERIES)
            lexical = []
            for text, sku in rows:
                hits = app.vectors.lexical_search(lexical_query(text), SearchFilters().for_kind("text"), 10)
                skus = [h.payload["sku"] for h in hits]
                lexical.append(skus.index(sku) + 1 if sku in skus else None)
            own = _answered(app, rows)
            app.search._thresholds = (time.monotonic() + 3600, _shared(thresholds))
            shared = _answered(app, rows)
            app.search._thresholds = None
            results[language] = {
                "queries": len(rows),
                "model": {**{f"R@{k}": round(v, 3) for k, v in model.recall.items()}, "MRR": round(model.mrr, 3)},
                "lexical": {f"R@{k}": round(recall(lexical, k), 3) for k in (1, 5, 10)},
                "at_threshold": own,
                "at_shared_threshold": shared,
            }
        fresh = cjk_gibberish(seed=2024)
        results["chinese_nonsense_refused"] = round(
            sum(not app.search.search(SearchRequest(text=w, top_k=10)).hits for w in fresh) / len(fresh), 3
        )
        results["chinese_nonsense"] = len(fresh)
    finally:
        app.close()
        close_embedded_clients()
    results["start_numpy"] = _start_seconds("import numpy")
    results["start_first_query"] = _start_seconds(FIRST_QUERY)
    return results


def _shared(thresholds: Thresholds) -> Thresholds:
    """The thresholds as they were before Chinese queries had their own."""
    return Thresholds(thresholds.photo, thresholds.text, thresholds.products, thresholds.details, None)


def markdown(results: dict[str, object]) -> str:
    lines = [
        HEADING,
        "",
        f"Vendure sample (54 products, listed in English), {results['embedder']}, in one run of "
        "`python -m bench.languages`. Queries: bench/queries/vendure_zh.csv (Chinese, typed as shoppers "
        "type them) and vendure_en.csv, evaluated by `shoplens eval`'s code (ranking, no threshold); "
        "the lexical (BM25) ranking alone is the baseline from the same run.",
        "",
        "| queries | ranking | R@1 | R@5 | R@10 | MRR |",
        "|---|---|---|---|---|---|",
    ]
    for language in SETS:
        row = results[language]
        assert isinstance(row, dict)
        model, lexical = row["model"], row["lexical"]
        lines.append(
            f"| {language} ({row['queries']}) | semantic + lexical (the default) | {model['R@1']} | {model['R@5']} | "
            f"{model['R@10']} | {model['MRR']} |"
        )
        lines.append(
            f"| {language} | lexical alone (baseline) | {lexical['R@1']} | {lexical['R@5']} | {lexical['R@10']} | |"
        )
    lines += [
        "",
        "| queries | threshold | answered | answered, right product first |",
        "|---|---|---|---|",
    ]
    for language in SETS:
        row = results[language]
        assert isinstance(row, dict)
        own, shared = row["at_threshold"], row["at_shared_threshold"]
        lines.append(f"| {language} | calibrated, by script (the default) | {own['answered']} | {own['right_first']} |")
        lines.append(f"| {language} | one shared text threshold | {shared['answered']} | {shared['right_first']} |")
    lines += [
        "",
        f"Thresholds: `{results['thresholds']}`. Chinese gibberish never used in calibration "
        f'({results["chinese_nonsense"]} strings of common characters) answered "no good match": '
        f"{results['chinese_nonsense_refused']}.",
        "",
        f"A fresh process embeds its first text query in {results['start_first_query']} s (median of {STARTS}); "
        f"`python -c 'import numpy'` alone takes {results['start_numpy']} s on the same machine.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.languages")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoplens-bench")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    section = markdown(measure(args.cache))
    print(section)
    write_section(section, args.out, HEADING)


if __name__ == "__main__":
    main()

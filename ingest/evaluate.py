"""`shoplens eval`: recall@k and MRR of labelled queries, through the storefront's search path."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.readers import CatalogError
from services.context import ShopLens
from services.files import spreadsheet_safe
from services.images import ImageError, load_image
from services.search import SearchRequest

CUTOFFS = (1, 5, 10)


@dataclass
class Query:
    line: int
    expected_sku: str
    image: str | None = None
    text: str | None = None


@dataclass
class EvalResult:
    queries: int
    recall: dict[int, float]
    mrr: float
    misses: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"recall@{k}": round(v, 4) for k, v in self.recall.items()}
        out.update(
            {"mrr": round(self.mrr, 4), "queries": self.queries, "misses": len(self.misses), "errors": len(self.errors)}
        )
        return out


def read_queries(path: Path) -> list[Query]:
    if not path.is_file():
        raise CatalogError(f"queries file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        rows = [(i, json.loads(line)) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    else:
        rows = [(i, row) for i, row in enumerate(csv.DictReader(text.splitlines()), start=2)]
    queries = []
    for line, row in rows:
        row = {str(k).strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
        if not row.get("expected_sku") or not (row.get("image") or row.get("text")):
            raise CatalogError(f"line {line}: each query needs expected_sku and an image or a text")
        queries.append(Query(line, str(row["expected_sku"]), row.get("image") or None, row.get("text") or None))
    if not queries:
        raise CatalogError(f"no queries in {path}")
    return queries


def evaluate(app: ShopLens, queries: list[Query], base_dir: Path, top_k: int = 10) -> EvalResult:
    depth = max(top_k, max(CUTOFFS))
    hits_at = {k: 0 for k in CUTOFFS}
    reciprocal = 0.0
    misses, errors = [], []
    evaluated = 0
    for query in queries:
        try:
            image = load_image(query.image, base_dir, app.limits) if query.image else None
        except ImageError as exc:
            errors.append(f"line {query.line}: {exc}")
            continue
        hits = app.search.search(SearchRequest(image=image, text=query.text, top_k=depth, min_score=-1.0)).hits
        skus = [h.sku for h in hits]
        evaluated += 1
        rank = skus.index(query.expected_sku) + 1 if query.expected_sku in skus else None
        for k in CUTOFFS:
            hits_at[k] += rank is not None and rank <= k
        if rank is not None and rank <= top_k:
            reciprocal += 1.0 / rank
        if rank != 1:
            misses.append(
                {
                    "line": query.line,
                    "query": query.image or query.text,
                    "expected_sku": query.expected_sku,
                    "rank": rank,
                    "top_sku": skus[0] if skus else None,
                }
            )
    n = max(evaluated, 1)
    return EvalResult(evaluated, {k: hits_at[k] / n for k in CUTOFFS}, reciprocal / n, misses, errors)


def write_misses(result: EvalResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["line", "query", "expected_sku", "rank", "top_sku"])
        writer.writeheader()
        writer.writerows(spreadsheet_safe(row) for row in result.misses)

"""`shoplens eval`: recall@k and MRR of labelled queries, and how often nonsense finds nothing.

A query row names the product it should find (`expected_sku`), or leaves it empty to say that
nothing in the shop should match. Labelled rows are searched with every score shown
(`min_score=-1.0`), so recall measures ranking alone and stays comparable across thresholds;
no-match rows are searched at the shop's own minimum score, as a shopper's query is, so
`no_match_rate` measures whether the "no good match" threshold holds.

There is one evaluation loop. It asks a `Shop`: the stores opened in this process
(`local_shop`) or a running server through its API (`remote_shop`), so the numbers mean the
same whichever way the command line reaches the shop. Photos are read here and sent as bytes
down the path a shopper's upload takes, so they are checked and decoded as the API decodes them.

A bad row (no query, an unreadable photo, an SKU the catalog lacks, a stray quote) is reported
with its line and skipped: one typo must not throw away an evaluation set of hundreds of rows.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ingest.readers import CatalogError
from server import schemas
from services.errors import ShopLensError, TooLarge, UsageError
from services.files import spreadsheet_safe
from services.images import ImageError, ImageFetchError, ImageLimits, read_image_bytes

if TYPE_CHECKING:
    from server.client import ShopLensClient
    from services.context import ShopLens
    from services.settings import Settings

CUTOFFS = (1, 5, 10)
REPORT_FIELDS = ["line", "query", "expected_sku", "rank", "top_sku", "top_score"]
# What one row's query can be refused for, whether raised here or answered by a server (the
# error's stable code): the row is skipped. Anything else (a store or the server down) stops eval.
ROW_FAULTS = frozenset({ImageError.code, ImageFetchError.code, TooLarge.code, "bad_query"})

SearchFunction = Callable[[schemas.SearchQuery, bytes | None], schemas.SearchResult]


@dataclass
class Query:
    line: int
    expected_sku: str  # "" for a query nothing in the shop should match
    image: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A row that was not evaluated, and why, in words that point at the line to fix."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class QueryFile:
    queries: list[Query]
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Shop:
    """What eval needs of a shop, the same whether this process holds the stores or a server does."""

    search: SearchFunction
    has_product: Callable[[str], bool]
    limits: ImageLimits  # for reading the query photos


def local_shop(app: ShopLens) -> Shop:
    """The stores opened in this process, searched exactly as the API searches them."""
    from server.state import run_search

    return Shop(
        search=lambda query, photo: run_search(app, query, photo),
        has_product=lambda sku: app.catalog.get_product(sku) is not None,
        limits=app.limits,
    )


def remote_shop(client: ShopLensClient, limits: ImageLimits) -> Shop:
    """A running server (which holds the stores) through its API: `/search` and `/products/{sku}`."""
    from server.client import ApiError

    def has_product(sku: str) -> bool:
        try:
            client.product(sku)
        except ApiError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    return Shop(search=lambda query, photo: client.search(query, photo), has_product=has_product, limits=limits)


def image_limits(settings: Settings) -> ImageLimits:
    """The photo-reading limits of these settings, for a client that opens no stores."""
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        url_timeout=settings.url_timeout,
        url_deadline=settings.url_deadline,
    )


@dataclass
class EvalResult:
    queries: int  # rows with an expected SKU that were evaluated
    recall: dict[int, float]
    mrr: float
    misses: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the skipped rows, "line N: why"
    no_match_queries: int = 0  # rows without an expected SKU that were evaluated
    no_match_empty: int = 0  # … of which the search answered with no hits

    @property
    def no_match_rate(self) -> float | None:
        """Share of no-match rows answered with nothing; None without such rows (not 0 or 1)."""
        return self.no_match_empty / self.no_match_queries if self.no_match_queries else None

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary; a measure with no rows to measure is null, not a misleading 0."""
        labelled = self.queries > 0
        out: dict[str, Any] = {f"recall@{k}": round(v, 4) if labelled else None for k, v in self.recall.items()}
        rate = self.no_match_rate
        out.update(
            {
                "mrr": round(self.mrr, 4) if labelled else None,
                "queries": self.queries,
                "no_match_queries": self.no_match_queries,
                "no_match_rate": round(rate, 4) if rate is not None else None,
                "misses": len(self.misses),
                "errors": len(self.errors),
            }
        )
        return out

    def summary(self) -> str:
        if self.queries:
            recall = "  ".join(f"recall@{k} {v:.3f}" for k, v in self.recall.items())
            not_first = sum(1 for m in self.misses if m["expected_sku"])
            line = f"{self.queries} queries: {recall}  MRR {self.mrr:.3f}; {not_first} not first"
        else:
            line = "no queries with an expected SKU"
        if self.no_match_queries:
            line += (
                f"; {self.no_match_queries} no-match queries: {self.no_match_empty} answered with no hits"
                f" (no_match_rate {self.no_match_rate:.3f})"
            )
        if self.errors:
            line += f"; {len(self.errors)} rows skipped"
        return line

    def matched_nonsense(self) -> list[dict[str, Any]]:
        """The no-match rows that found something: what a person checks the threshold against."""
        return [m for m in self.misses if not m["expected_sku"]]


def read_queries(path: Path) -> QueryFile:
    """The file's queries, and its malformed rows with their line numbers.

    A CSV is read one physical line at a time (a query never spans lines), so a stray quote
    spoils its own row only, instead of swallowing the rows after it into one field."""
    if not path.is_file():
        raise CatalogError(f"queries file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CatalogError(f"{path.name} is not valid UTF-8 text (save it as UTF-8)") from None
    lines = [(number, line) for number, line in enumerate(io.StringIO(text), start=1) if line.strip()]
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        parsed = [_json_row(number, line) for number, line in lines]
    else:
        parsed = _csv_rows(path, lines)
    queries = [row for row in parsed if isinstance(row, Query)]
    skipped = [row for row in parsed if isinstance(row, Skipped)]
    if not queries:
        first = f" ({skipped[0]})" if skipped else ""
        raise CatalogError(f"no usable queries in {path.name}{first}")
    return QueryFile(queries, skipped)


def _csv_rows(path: Path, lines: list[tuple[int, str]]) -> list[Query | Skipped]:
    if not lines:
        raise CatalogError(f"{path.name} is empty: it needs a header line (image,text,expected_sku)")
    try:
        header = [name.strip().lower() for name in _csv_line(lines[0][1])]
    except csv.Error as exc:
        raise CatalogError(f"{path.name}: cannot read the header line ({exc})") from None
    if "expected_sku" not in header or not {"image", "text"} & set(header):
        raise CatalogError(
            f"{path.name}: the header needs an expected_sku column and an image or text column"
            f" (found: {', '.join(header) or 'nothing'})"
        )
    rows: list[Query | Skipped] = []
    for number, line in lines[1:]:
        try:
            fields = _csv_line(line)
        except csv.Error as exc:
            rows.append(Skipped(number, f"cannot read the row ({exc}; a stray quote?)"))
            continue
        if len(fields) != len(header):
            more = "more" if len(fields) > len(header) else "fewer"
            rows.append(
                Skipped(
                    number,
                    f"{len(fields)} fields, {more} than the header's {len(header)}"
                    " (a stray quote or an unquoted comma?)",
                )
            )
            continue
        rows.append(_query(number, dict(zip(header, fields, strict=True))))
    return rows


def _csv_line(line: str) -> list[str]:
    return next(csv.reader([line.rstrip("\r\n")], strict=True), [])


def _json_row(number: int, line: str) -> Query | Skipped:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return Skipped(number, f"not valid JSON ({exc.msg})")
    if not isinstance(row, dict):
        return Skipped(number, "not a JSON object")
    row = {str(k).strip().lower(): v for k, v in row.items()}
    if "expected_sku" not in row:
        return Skipped(number, 'no expected_sku (give "" for a query nothing in the shop should match)')
    return _query(number, row)


def _query(number: int, row: dict[str, Any]) -> Query | Skipped:
    def value(name: str) -> str:
        v = row.get(name)
        return "" if v is None else str(v).strip()

    image, text = value("image"), value("text")
    if not image and not text:
        return Skipped(number, "no image and no text")
    return Query(number, value("expected_sku"), image or None, text or None)


def evaluate(
    shop: Shop | ShopLens,
    queries: Sequence[Query],
    base_dir: Path,
    top_k: int = 10,
    skipped: Sequence[Skipped] = (),
) -> EvalResult:
    """Search every query; `skipped` (rows the reader refused) joins the rows refused here.

    A `ShopLens` is searched in this process. Raises CatalogError when no row could be used,
    since then there is no number to report."""
    if not isinstance(shop, Shop):
        shop = local_shop(shop)
    if not 1 <= top_k <= schemas.MAX_TOP_K:
        raise UsageError(f"--top-k must be between 1 and {schemas.MAX_TOP_K}")
    depth = max(top_k, max(CUTOFFS))
    hits_at = {k: 0 for k in CUTOFFS}
    reciprocal = 0.0
    misses: list[dict[str, Any]] = []
    problems = list(skipped)
    known: dict[str, bool] = {}
    labelled = no_match = no_match_empty = 0
    for query in queries:
        sku = query.expected_sku
        if sku:
            if sku not in known:
                known[sku] = shop.has_product(sku)
            if not known[sku]:
                problems.append(Skipped(query.line, f"expected SKU {sku!r} is not in the catalog"))
                continue
        answer = _search(shop, query, base_dir, depth)
        if isinstance(answer, Skipped):
            problems.append(answer)
            continue
        hits = answer.hits
        miss: dict[str, Any] = {
            "line": query.line,
            "query": query.image or query.text,
            "expected_sku": sku,
            "rank": None,
            "top_sku": hits[0].sku if hits else None,
            "top_score": round(hits[0].score, 4) if hits else None,
        }
        if not sku:
            no_match += 1
            no_match_empty += not hits
            if hits:
                misses.append(miss)
            continue
        labelled += 1
        skus = [h.sku for h in hits]
        rank = skus.index(sku) + 1 if sku in skus else None
        for k in CUTOFFS:
            hits_at[k] += rank is not None and rank <= k
        if rank is not None and rank <= top_k:
            reciprocal += 1.0 / rank
        if rank != 1:
            misses.append({**miss, "rank": rank})
    problems.sort(key=lambda p: p.line)
    if not labelled and not no_match:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CatalogError(f"no usable queries: every row was skipped ({'; '.join(map(str, problems[:3]))}{more})")
    n = max(labelled, 1)
    return EvalResult(
        labelled,
        {k: hits_at[k] / n for k in CUTOFFS},
        reciprocal / n,
        misses,
        [str(p) for p in problems],
        no_match,
        no_match_empty,
    )


def _search(shop: Shop, query: Query, base_dir: Path, depth: int) -> schemas.SearchResult | Skipped:
    """One row's answer, or why the row cannot be asked. A labelled row sees every score; a
    no-match row leaves `min_score` unset so the shop's default threshold decides."""
    labelled = bool(query.expected_sku)
    try:
        request = schemas.SearchQuery(
            text=query.text, top_k=depth if labelled else 1, min_score=-1.0 if labelled else None
        )
    except ValidationError as exc:
        return Skipped(query.line, f"unusable text ({exc.errors()[0]['msg']})")
    try:
        photo = read_image_bytes(query.image, base_dir, shop.limits) if query.image else None
        return shop.search(request, photo)
    except ShopLensError as exc:
        if exc.code not in ROW_FAULTS:
            raise
        reason = exc.message
        if query.image and query.image not in reason:
            reason = f"image {query.image}: {reason}"
        return Skipped(query.line, reason)


def write_misses(result: EvalResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(spreadsheet_safe(row) for row in result.misses)


def run_eval(
    shop: Shop, path: Path, parsed: QueryFile, top_k: int, report: Path | None, home: Path, as_json: bool
) -> EvalResult:
    """`shoplens eval` whichever way the command line reaches the shop: evaluate the queries read
    from `path` (read first by the caller, so a bad file fails before a model loads), write the
    misses (to `home`/reports unless `report` is given) and print the summary."""
    result = evaluate(shop, parsed.queries, path.resolve().parent, top_k, parsed.skipped)
    report = report or home / "reports" / f"eval-{datetime.now():%Y%m%d-%H%M%S}.csv"
    write_misses(result, report)
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    if as_json:
        print(json.dumps(result.as_dict()))
        return result
    print(f"{result.summary()} (see {report})")
    matched = result.matched_nonsense()
    for miss in matched[:10]:
        found = f"{miss['top_sku']} ({miss['top_score']:.3f})"
        print(f"  line {miss['line']}: {miss['query']!r} should match nothing, found {found}")
    if len(matched) > 10:
        print(f"  … and {len(matched) - 10} more no-match queries with hits")
    return result

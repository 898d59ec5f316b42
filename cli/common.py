"""What every command shares, whether it opens the stores or asks a server: exit codes, the
user-mistake error, the search query from the arguments, and how results are printed (the same
API bodies either way, so both modes print and `--json` the same)."""

from __future__ import annotations

import argparse
import json
import sys

from server import schemas
from services.errors import UsageError

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class UserError(UsageError):
    """A mistake the user can fix; printed without a traceback."""


def exit_code(status: str) -> int:
    if status == "interrupted":
        print("shoplens: stopped early by a signal after a whole batch; run it again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status in {"succeeded", "partial"} else EXIT_FAILURE


def search_query(args: argparse.Namespace) -> schemas.SearchQuery:
    if args.image is None and not args.text:
        raise UserError("give --image PATH, --text TEXT, or both")
    return schemas.SearchQuery(
        text=args.text,
        weight=args.weight,
        top_k=args.top_k,
        offset=args.offset,
        min_score=args.min_score,
        category=args.category,
        brand=args.brand,
        min_price=args.min_price,
        max_price=args.max_price,
        in_stock=args.in_stock,
    )


def read_photo(args: argparse.Namespace) -> bytes | None:
    if args.image is None:
        return None
    try:
        return bytes(args.image.read_bytes())
    except FileNotFoundError:
        raise UserError(f"image file not found: {args.image}") from None
    except OSError as exc:
        raise UserError(f"cannot read {args.image}: {exc.strerror or exc}") from None


def print_hits(result: schemas.SearchResult, args: argparse.Namespace, where: str = "") -> None:
    if args.json:
        print(json.dumps([h.model_dump() for h in result.hits], ensure_ascii=False))
        return
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if not result.hits:
        threshold = "" if result.threshold is None else f" (nothing reaches the match threshold {result.threshold:.3f})"
        print(f"no good match{threshold}")
        if result.closest:
            print("closest products, not matches:")
    for rank, hit in enumerate(result.hits or result.closest, start=args.offset + 1):
        price = price_text(hit.price, hit.currency)
        code = " [code]" if hit.code_match else ""
        print(f"{rank:>3}. {hit.score:.3f}  {hit.sku:<16} {hit.title[:48]:<48} {price:>12}  {hit.category or ''}{code}")
    print(f"{len(result.hits)} result(s) in {result.took_ms:.0f} ms{where}", file=sys.stderr)


def price_text(price: float | None, currency: str | None) -> str:
    """In the currency's minor units: 12.345 KWD is not 12.35 KWD, 1500 JPY not 1500.00."""
    from services.prices import price_decimals

    if price is None:
        return "-"
    return f"{price:.{price_decimals(price, currency)}f} {currency or ''}".strip()


def print_runs(runs: list[schemas.Run], as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in runs]))
        return
    if not runs:
        print("no ingest runs yet")
    for r in runs:
        took = f"{r.seconds:.1f}s" if r.seconds is not None else "-"
        print(
            f"{r.id:>4} {r.started_at:%Y-%m-%d %H:%M:%S} {took:>7} {r.trigger:<8} {r.status:<11} "
            f"new {r.new} changed {r.changed} unchanged {r.unchanged} pruned {r.pruned} failed {r.failed} "
            f"embedded {r.images_embedded}" + (f"  {r.message}" if r.message else "")
        )


def print_stats(stats: schemas.Stats, as_json: bool) -> None:
    if as_json:
        print(stats.model_dump_json())
        return
    sql, qd = stats.sql, stats.qdrant
    print(f"embedder:   {stats.embedder}\ncollection: {stats.collection}")
    print(f"SQL:    {sql.products} products, {sql.images} images, {sql.unsynced} pending vector sync")
    print(f"Qdrant: {qd['text_points']} text vectors, {qd['image_points']} image vectors")
    print("consistent: yes" if stats.consistent else "consistent: NO (run `shoplens reconcile` to repair it)")


def print_audit(audit: schemas.Audit, args: argparse.Namespace, accepted: schemas.AuditAccepted | None = None) -> None:
    """The audit as JSON (the contract, plus `accepted` when suggestions were accepted) or as
    lines; `--report FILE.csv` gets one spreadsheet-safe row per finding."""
    import csv

    from services.audit import REPORT_COLUMNS, report_rows

    data = audit.model_dump()
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        with args.report.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(REPORT_COLUMNS))
            writer.writeheader()
            writer.writerows(report_rows(data))
    if args.json:
        if accepted is not None:
            data["accepted"] = accepted.model_dump()
        print(json.dumps(data))
        return
    print(
        f"audited {audit.products} products in {audit.seconds:.1f} s: {len(audit.duplicates)} near-duplicate groups, "
        f"{len(audit.category_suggestions)} category suggestions, {len(audit.mismatches)} mismatches"
    )
    for note in audit.notes:
        print(f"note: {note}")
    for d in audit.duplicates:
        print(f"duplicate  {' '.join(d.skus)}  (photo similarity {d.score:.3f})")
    for s in audit.category_suggestions:
        print(f"suggest    {s.sku}: {s.category}  (confidence {s.confidence:.2f})")
    for m in audit.mismatches:
        print(f"mismatch   {m.sku}: listed {m.listed}, looks like {m.suggested}  ({m.confidence:.2f}) — {m.reason}")
    if args.report is not None:
        print(f"report: {args.report}")
    if accepted is not None:
        print(f"accepted {len(accepted.changed)} suggestions")
        for sku, category in accepted.changed.items():
            print(f"  {sku}: {category}")
        for sku, why in accepted.skipped.items():
            print(f"  not changed {sku}: {why}", file=sys.stderr)

"""The `shoplens` command line. User mistakes print one clear line on stderr and exit non-zero."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from services.context import ShopLens
from services.errors import ShopLensError, UsageError

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class UserError(UsageError):
    """A mistake the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoplens", description="Photo-to-product search for online shops.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="load or refresh a CSV/JSONL catalog (a path or an http(s) URL)")
    p.add_argument("catalog")
    p.add_argument("--prune", action="store_true", help="remove products that are not in the catalog")
    p.add_argument("--wait", action="store_true", help="wait for another ingest run to finish instead of exiting")
    p.add_argument("--report", type=Path, help="write the problems found to this .csv or .json file")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("schedule", help="re-ingest a catalog path or URL on an interval or a cron schedule")
    p.add_argument("catalog")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval, e.g. 30m, 1h, 2h30m")
    when.add_argument("--cron", help='crontab expression, e.g. "0 * * * *" (UTC)')
    p.add_argument("--prune", action="store_true")
    p.add_argument("--max-runs", type=int, help="stop after this many runs")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("runs", help="ingest run history")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("reconcile", help="find and repair drift between SQL and Qdrant")
    p.add_argument("--dry-run", action="store_true", help="only report")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("search", help="search by photo, text or both")
    p.add_argument("--image", type=Path, help="query photo")
    p.add_argument("--text", help="query text")
    p.add_argument("--weight", type=float, default=0.5, help="text share when giving both (0-1, default 0.5)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--category", action="append", default=[], help="repeatable")
    p.add_argument("--brand", action="append", default=[], help="repeatable")
    p.add_argument("--min-price", type=float)
    p.add_argument("--max-price", type=float)
    p.add_argument("--in-stock", action="store_true")
    p.add_argument("--min-score", type=float)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("stats", help="product, image and vector counts in SQL and Qdrant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("reindex", help="rebuild every vector from SQL and the media folder")
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("eval", help="recall@1/5/10 and MRR of labelled queries (image or text → expected_sku)")
    p.add_argument("queries", type=Path, help="CSV or JSONL with image (path relative to the file) or text, and expected_sku")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--report", type=Path, help="write the misses to this CSV file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("import-vendure", help="convert the Vendure demo catalog to a ShopLens CSV")
    p.add_argument("assets", type=Path, help="the folder holding products.csv and images/")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_import_vendure)

    p = sub.add_parser("demo", help="load the sample shop (downloaded once from the npm registry) and open the storefront")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.add_argument("--registry", help="npm registry URL (default: NPM_CONFIG_REGISTRY, else the public npm registry)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the storefront (and the admin page) with the current catalog")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", help="interface to listen on (default: all)")
    p.set_defaults(func=cmd_serve)
    return parser


def cmd_ingest(app: ShopLens, args: argparse.Namespace) -> int:
    from ingest.locking import ingest_lock
    from ingest.pipeline import ingestor_for
    from ingest.sources import load_catalog

    catalog = load_catalog(args.catalog, timeout=app.settings.url_timeout)
    with ingest_lock(app.catalog, app.settings.home, wait=None if args.wait else 0):
        pass  # fail fast, before loading a model, when another run holds the store
    ingestor = ingestor_for(app)
    _announce_embedder(app)
    _stop_on_signals(ingestor.stop_event)
    result = ingestor.ingest(catalog, prune=args.prune, trigger="cli", wait=None if args.wait else 0)
    report = args.report or app.settings.home / "reports" / f"run-{result.run_id}.csv"
    result.write_report(report)
    if args.json:
        print(json.dumps({"run_id": result.run_id, "status": result.status, "seconds": round(result.seconds, 3), "report": str(report), "errors": len(result.errors), **result.counts.__dict__}))
    else:
        print(result.summary())
        for error in result.errors[:10]:
            print(f"  {error}", file=sys.stderr)
        if len(result.errors) > 10:
            print(f"  … and {len(result.errors) - 10} more", file=sys.stderr)
        print(f"report: {report}")
    return _exit_code(result.status)


def cmd_schedule(app: ShopLens, args: argparse.Namespace) -> int:
    from server.schedule import CatalogSchedule, make_trigger

    try:
        trigger = make_trigger(args.every, args.cron)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _announce_embedder(app)
    schedule = CatalogSchedule(app, args.catalog, args.prune, args.max_runs, echo=lambda line: print(line, flush=True))
    print(f"scheduled {args.catalog} ({'every ' + args.every if args.every else 'cron ' + args.cron}); Ctrl-C to stop", flush=True)
    schedule.start(trigger)
    return 0


def cmd_runs(app: ShopLens, args: argparse.Namespace) -> int:
    runs = app.catalog.list_runs(args.limit)
    fields = ("id", "started_at", "finished_at", "trigger", "status", "rows_total", "new", "changed", "unchanged", "pruned", "failed", "images_embedded", "error_count", "message", "source")
    if args.json:
        print(json.dumps([{f: getattr(r, f) for f in fields} for r in runs], default=str))
        return 0
    if not runs:
        print("no ingest runs yet")
    for r in runs:
        took = f"{(r.finished_at - r.started_at).total_seconds():.1f}s" if r.finished_at else "-"
        print(
            f"{r.id:>4} {r.started_at:%Y-%m-%d %H:%M:%S} {took:>7} {r.trigger:<8} {r.status:<11} "
            f"new {r.new} changed {r.changed} unchanged {r.unchanged} pruned {r.pruned} failed {r.failed} "
            f"embedded {r.images_embedded}" + (f"  {r.message}" if r.message else "")
        )
    return 0


def cmd_reconcile(app: ShopLens, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ingest.locking import ingest_lock
    from ingest.pipeline import ingestor_for
    from ingest.reconcile import reconcile

    with ingest_lock(app.catalog, app.settings.home, wait=0):
        report = reconcile(ingestor_for(app), dry_run=args.dry_run)
    print(json.dumps({**asdict(report), "clean": report.clean}) if args.json else report.summary())
    return 0


def cmd_search(app: ShopLens, args: argparse.Namespace) -> int:
    from services.images import load_image
    from services.search import SearchFilters, SearchRequest

    if args.image is None and not args.text:
        raise UserError("give --image PATH, --text TEXT, or both")
    image = load_image(str(args.image), None, app.limits) if args.image else None
    filters = SearchFilters(tuple(args.category), tuple(args.brand), args.min_price, args.max_price, args.in_stock)
    response = app.search.search(SearchRequest(image, args.text, args.weight, filters, args.top_k, args.offset, args.min_score))
    if args.json:
        print(json.dumps([h.as_dict() for h in response.hits], ensure_ascii=False))
        return 0
    _announce_embedder(app)
    for note in response.notes:
        print(f"note: {note}", file=sys.stderr)
    if not response.hits:
        print("no matching products")
    for rank, hit in enumerate(response.hits, start=args.offset + 1):
        price = f"{hit.price:.2f} {hit.currency or ''}".strip() if hit.price is not None else "-"
        print(f"{rank:>3}. {hit.score:.3f}  {hit.sku:<16} {hit.title[:48]:<48} {price:>12}  {hit.category or ''}")
    print(f"{len(response.hits)} result(s) in {response.took_ms:.0f} ms", file=sys.stderr)
    return 0


def cmd_stats(app: ShopLens, args: argparse.Namespace) -> int:
    from ingest.reconcile import collect_stats

    stats = collect_stats(app)
    if args.json:
        print(json.dumps(stats))
        return 0
    sql, qd = stats["sql"], stats["qdrant"]
    print(f"embedder:   {stats['embedder']}\ncollection: {stats['collection']}")
    print(f"SQL:    {sql['products']} products, {sql['images']} images, {sql['unsynced']} pending vector sync")
    print(f"Qdrant: {qd['text_points']} text vectors, {qd['image_points']} image vectors")
    print("consistent: yes" if stats["consistent"] else "consistent: NO (run `shoplens ingest` again or `shoplens reindex`)")
    return 0


def cmd_reindex(app: ShopLens, args: argparse.Namespace) -> int:
    from ingest.pipeline import ingestor_for

    _announce_embedder(app)
    ingestor = ingestor_for(app)
    _stop_on_signals(ingestor.stop_event)
    result = ingestor.reindex()
    print(result.summary())
    return _exit_code(result.status)


def cmd_eval(app: ShopLens, args: argparse.Namespace) -> int:
    from datetime import datetime

    from ingest.evaluate import evaluate, read_queries, write_misses

    queries = read_queries(args.queries)
    _announce_embedder(app)
    result = evaluate(app, queries, args.queries.resolve().parent, args.top_k)
    report = args.report or app.settings.home / "reports" / f"eval-{datetime.now():%Y%m%d-%H%M%S}.csv"
    write_misses(result, report)
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        recall = "  ".join(f"recall@{k} {v:.3f}" for k, v in result.recall.items())
        print(f"{result.queries} queries: {recall}  MRR {result.mrr:.3f}; {len(result.misses)} not first (see {report})")
    return 0


def cmd_import_vendure(app: ShopLens, args: argparse.Namespace) -> int:
    from ingest.vendure import convert_vendure

    count = convert_vendure(args.assets, args.out)
    print(f"wrote {count} products to {args.out}")
    return 0


def cmd_demo(app: ShopLens, args: argparse.Namespace) -> int:
    from cli.serve import PortInUse, check_port, prepare_demo, run_storefront
    from cli.samples import SampleError

    try:
        check_port(args.port, args.address)
        _announce_embedder(app)
        result = prepare_demo(app, registry=args.registry, log=lambda line: print(line, file=sys.stderr))
    except (SampleError, PortInUse) as exc:
        raise UserError(str(exc)) from None
    print(result.summary())
    if result.status not in {"succeeded", "partial"}:
        return EXIT_FAILURE
    app.close()  # the storefront process must own the embedded vector store
    try:
        run_storefront(args.port, args.address, open_browser=not args.no_browser)
    except PortInUse as exc:
        raise UserError(str(exc)) from None
    return 0


def cmd_serve(app: ShopLens, args: argparse.Namespace) -> int:
    from cli.serve import PortInUse, run_storefront

    app.close()
    try:
        run_storefront(args.port, args.address)
    except PortInUse as exc:
        raise UserError(str(exc)) from None
    return 0


def _exit_code(status: str) -> int:
    if status == "interrupted":
        print("shoplens: stopped early by a signal after a whole batch; run it again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status in {"succeeded", "partial"} else EXIT_FAILURE


def _stop_on_signals(event) -> None:  # noqa: ANN001
    """SIGTERM/SIGINT: finish the current batch, record the run as interrupted; twice: stop now."""
    import signal

    def handler(signum, _frame) -> None:  # noqa: ANN001
        if event.is_set():
            raise KeyboardInterrupt
        event.set()
        print(f"shoplens: {signal.Signals(signum).name}: finishing the current batch…", file=sys.stderr)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _announce_embedder(app: ShopLens) -> None:
    embedder = app.embedder
    how = "chosen automatically" if app.settings.embedder == "auto" else "configured"
    line = f"embedder: {embedder.identity.describe()} ({how})"
    if embedder.fallback_reason:
        line += f"; open_clip unavailable: {embedder.fallback_reason}"
    print(line, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("SHOPLENS_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "huggingface_hub", "sentence_transformers", "root"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)
    app = ShopLens()
    try:
        return args.func(app, args)
    except ShopLensError as exc:
        if debug:
            raise
        print(f"shoplens: error: {exc.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("shoplens: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"shoplens: error: {exc.__class__.__name__}: {_one_line(exc)} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        app.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())

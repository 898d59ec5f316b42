"""The commands that open the stores themselves: used when no ShopLens server runs for this home
(with one running, `cli.remote` sends the same commands to it)."""

from __future__ import annotations

import argparse
import json
import sys

from cli.common import EXIT_FAILURE, UserError, exit_code
from services.context import ShopLens


def cmd_ingest(app: ShopLens, args: argparse.Namespace) -> int:
    from ingest.locking import ingest_lock
    from ingest.pipeline import ingestor_for
    from ingest.sources import load_catalog

    catalog = load_catalog(args.catalog, timeout=app.settings.url_timeout)
    with ingest_lock(app.catalog, app.settings.home, wait=None if args.wait else 0):
        pass  # fail fast, before loading a model, when another run holds the store
    ingestor = ingestor_for(app)
    announce_embedder(app)
    stop_on_signals(ingestor.stop_event)
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
    return exit_code(result.status)


def cmd_schedule(app: ShopLens, args: argparse.Namespace) -> int:
    from server.schedule import CatalogSchedule, make_trigger

    try:
        trigger = make_trigger(args.every, args.cron)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    announce_embedder(app)
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
    from ingest.reconcile import reconcile_app

    with ingest_lock(app.catalog, app.settings.home, wait=0):
        report = reconcile_app(app, dry_run=args.dry_run)
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
    announce_embedder(app)
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

    announce_embedder(app)
    ingestor = ingestor_for(app)
    stop_on_signals(ingestor.stop_event)
    result = ingestor.reindex()
    print(result.summary())
    return exit_code(result.status)


def cmd_eval(app: ShopLens, args: argparse.Namespace) -> int:
    from datetime import datetime

    from ingest.evaluate import evaluate, read_queries, write_misses

    queries = read_queries(args.queries)
    announce_embedder(app)
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
    from cli.serve import Listen, prepare_demo, serve

    listen = Listen(args.address, args.api_port, args.port)
    listen.check()  # before downloading anything
    announce_embedder(app)
    result = prepare_demo(app, registry=args.registry, log=lambda line: print(line, file=sys.stderr))
    print(result.summary())
    if result.status not in {"succeeded", "partial"}:
        return EXIT_FAILURE
    serve(app, listen, open_browser=not args.no_browser)
    return 0


def cmd_serve(app: ShopLens, args: argparse.Namespace) -> int:
    from cli.serve import Listen, serve
    from server.schedule import ServerSchedule

    try:
        if args.schedule:
            schedule = ServerSchedule(args.schedule, args.every, args.cron, args.prune)
        else:
            schedule = ServerSchedule.from_settings(app.settings)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    listen = Listen(args.address, args.api_port, None if args.no_pages else args.port)
    listen.check()
    serve(app, listen, schedule)
    return 0


def cmd_pages(app: ShopLens, args: argparse.Namespace) -> int:
    from cli.serve import check_port, run_pages

    if not app.settings.server_url:
        raise UserError("set SHOPLENS_SERVER_URL to the ShopLens server the pages should use (e.g. http://api:8000)")
    check_port(args.port, args.address)
    run_pages(args.port, args.address, app.settings.server_url)
    return 0


def cmd_migrate(app: ShopLens, args: argparse.Namespace) -> int:
    print(app.catalog.migration.describe())
    return 0


def stop_on_signals(event) -> None:  # noqa: ANN001
    """SIGTERM/SIGINT: finish the current batch, record the run as interrupted; twice: stop now."""
    import signal

    def handler(signum, _frame) -> None:  # noqa: ANN001
        if event.is_set():
            raise KeyboardInterrupt
        event.set()
        print(f"shoplens: {signal.Signals(signum).name}: finishing the current batch…", file=sys.stderr)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def announce_embedder(app: ShopLens) -> None:
    embedder = app.embedder
    how = "chosen automatically" if app.settings.embedder == "auto" else "configured"
    line = f"embedder: {embedder.identity.describe()} ({how})"
    if embedder.fallback_reason:
        line += f"; open_clip unavailable: {embedder.fallback_reason}"
    print(line, file=sys.stderr)

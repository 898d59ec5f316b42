"""The commands that open the stores themselves: used when no ShopLens server runs for this home
(with one running, `cli.remote` sends the same commands to it)."""

from __future__ import annotations

import argparse
import json
import sys

from cli.common import EXIT_FAILURE, UserError, exit_code, print_hits, print_runs, print_stats, read_photo, search_query
from services.context import ShopLens


def cmd_ingest(app: ShopLens, args: argparse.Namespace) -> int:
    from ingest.locking import ingest_lock
    from ingest.pipeline import ingestor_for
    from ingest.sources import load_catalog

    catalog = load_catalog(args.catalog, timeout=app.settings.url_timeout, deadline=app.settings.url_deadline)
    with ingest_lock(app.catalog, app.settings.home, wait=None if args.wait else 0):
        pass  # fail fast, before loading a model, when another run holds the store
    ingestor = ingestor_for(app)
    announce_embedder(app)
    stop_on_signals(ingestor.stop_event)
    result = ingestor.ingest(
        catalog, prune=args.prune, trigger="cli", wait=None if args.wait else 0, force_prune=args.force_prune
    )
    report = args.report or app.settings.home / "reports" / f"run-{result.run_id}.csv"
    result.write_report(report)
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "status": result.status,
                    "message": result.message,  # why a run failed (e.g. every embedding refused)
                    "seconds": round(result.seconds, 3),
                    "report": str(report),
                    "errors": len(result.errors),
                    **result.counts.__dict__,
                }
            )
        )
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
    schedule = CatalogSchedule(
        app,
        args.catalog,
        args.prune,
        args.max_runs,
        echo=lambda line: print(line, flush=True),
        force_prune=args.force_prune,
    )
    print(
        f"scheduled {args.catalog} ({'every ' + args.every if args.every else 'cron ' + args.cron}); Ctrl-C to stop",
        flush=True,
    )
    schedule.start(trigger)
    return 0


def cmd_runs(app: ShopLens, args: argparse.Namespace) -> int:
    from server import views

    print_runs([views.run(r) for r in app.catalog.list_runs(args.limit)], args.json)
    return 0


def cmd_reconcile(app: ShopLens, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ingest.locking import ingest_lock
    from ingest.reconcile import reconcile_app

    with ingest_lock(app.catalog, app.settings.home, wait=0):
        report = reconcile_app(app, dry_run=args.dry_run)
    print(json.dumps({**asdict(report), "clean": report.clean}) if args.json else report.summary())
    return 0


def cmd_audit(app: ShopLens, args: argparse.Namespace) -> int:
    from cli.common import print_audit
    from cli.remote import _check_confidence
    from server import schemas
    from services.audit import Auditor

    _check_confidence(args.accept_above)
    auditor = Auditor(app)
    audit = schemas.Audit.model_validate(auditor.report().as_dict())
    accepted = None
    if args.accept or args.accept_above is not None:
        accepted = schemas.AuditAccepted.model_validate(auditor.accept(args.accept, args.accept_above).as_dict())
    print_audit(audit, args, accepted)
    return 0


def cmd_search(app: ShopLens, args: argparse.Namespace) -> int:
    from server.state import run_search

    query, photo = search_query(args), read_photo(args)
    result = run_search(app, query, photo)
    if not args.json:
        announce_embedder(app)
    print_hits(result, args)
    return 0


def cmd_stats(app: ShopLens, args: argparse.Namespace) -> int:
    from ingest.reconcile import collect_stats
    from server import schemas

    print_stats(schemas.Stats.model_validate(collect_stats(app)), args.json)
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
    from ingest.evaluate import local_shop, read_queries, run_eval

    queries = read_queries(args.queries)  # a bad file fails before the model loads
    announce_embedder(app)
    run_eval(local_shop(app), args.queries, queries, args.top_k, args.report, app.settings.home, args.json)
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
            schedule = ServerSchedule(args.schedule, args.every, args.cron, args.prune, args.force_prune)
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


def stop_on_signals(event) -> None:
    """SIGTERM/SIGINT: finish the current batch, record the run as interrupted; twice: stop now."""
    import signal

    def handler(signum, _frame) -> None:
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

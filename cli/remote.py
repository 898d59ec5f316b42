"""The commands as a client of a running ShopLens server: nothing here opens a store or loads a
model (a photo search starts in well under a second), and ingests run in the server's worker."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC
from pathlib import Path

from cli.common import (
    UserError,
    exit_code,
    print_audit,
    print_hits,
    print_runs,
    print_stats,
    read_photo,
    search_query,
)
from ingest.records import RowError
from server import schemas
from server.client import ShopLensClient
from services.fetch import is_url

CLIENT_COMMANDS = frozenset({"ingest", "search", "stats", "runs", "reindex", "schedule", "reconcile", "eval", "audit"})


def cmd_search(client: ShopLensClient, args: argparse.Namespace) -> int:
    query, photo = search_query(args), read_photo(args)
    result = client.search(query, photo, args.image.name if args.image else "photo.jpg")
    print_hits(result, args, f" (server {client.base_url})")
    return 0


def cmd_eval(client: ShopLensClient, args: argparse.Namespace) -> int:
    """The queries' photos are read here and searched through the server, which holds the stores;
    the misses report is written under this machine's home."""
    from ingest.evaluate import image_limits, read_queries, remote_shop, run_eval
    from services.settings import Settings

    settings = Settings()
    queries = read_queries(args.queries)
    print(f"evaluating through the server {client.base_url}", file=sys.stderr)
    shop = remote_shop(client, image_limits(settings))
    run_eval(shop, args.queries, queries, args.top_k, args.report, settings.home, args.json)
    return 0


def cmd_ingest(client: ShopLensClient, args: argparse.Namespace, local: bool) -> int:
    """A URL or (for a server on this machine) a path is read by the server; otherwise the catalog
    file is uploaded, with `--images` as its ZIP of photos."""
    trigger = getattr(args, "trigger", "cli")
    prune = {"prune": args.prune, "force_prune": getattr(args, "force_prune", False)}
    if is_url(args.catalog):
        job = client.ingest_source(url=args.catalog, trigger=trigger, **prune)
    elif local and args.images is None:
        path = Path(args.catalog).expanduser()
        if not path.is_file():
            raise UserError(f"catalog file not found: {args.catalog}")
        job = client.ingest_source(path=path.resolve(), trigger=trigger, **prune)
    else:
        path = Path(args.catalog)
        try:
            catalog = (path.name, path.read_bytes())
            images = args.images.read_bytes() if args.images else None
        except OSError as exc:
            raise UserError(f"cannot read {exc.filename}: {exc.strerror}") from None
        job = client.ingest_upload(catalog, images, trigger=trigger, **prune)
    return _follow(client, job, args)


def cmd_reindex(client: ShopLensClient, args: argparse.Namespace) -> int:
    return _follow(client, client.reindex(), args)


def cmd_stats(client: ShopLensClient, args: argparse.Namespace) -> int:
    print_stats(client.stats(), args.json)
    return 0


def cmd_runs(client: ShopLensClient, args: argparse.Namespace) -> int:
    print_runs(client.runs(args.limit), args.json)
    return 0


def cmd_audit(client: ShopLensClient, args: argparse.Namespace) -> int:
    """Audited in the server (it holds the vectors); accepting goes through it too."""
    _check_confidence(args.accept_above)
    audit = client.audit(fresh=args.fresh)
    accepted = None
    if args.accept or args.accept_above is not None:
        accepted = client.accept_audit(args.accept, args.accept_above)
    print_audit(audit, args, accepted)
    return 0


def _check_confidence(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UserError("--accept-above takes a confidence between 0 and 1")


def cmd_reconcile(client: ShopLensClient, args: argparse.Namespace) -> int:
    report = client.reconcile(dry_run=args.dry_run)
    print(json.dumps(report) if args.json else report["summary"])
    return 0


def cmd_schedule(client: ShopLensClient, args: argparse.Namespace, local: bool) -> int:
    """Ticks here, runs in the server: each tick queues the catalog and follows the job; a tick
    that finds the previous run still going is skipped."""
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from server.schedule import make_trigger

    try:
        trigger = make_trigger(args.every, args.cron)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scheduler = BlockingScheduler(timezone="UTC")
    runs = 0
    quiet = argparse.Namespace(json=False, report=None, quiet=True, trigger="schedule")

    def tick() -> None:
        nonlocal runs
        runs += 1
        try:
            ns = argparse.Namespace(
                catalog=args.catalog, prune=args.prune, force_prune=args.force_prune, images=None, **vars(quiet)
            )
            cmd_ingest(client, ns, local)
        except Exception as exc:  # one failed run must not stop the schedule
            print(f"run failed: {exc}", flush=True)
        if args.max_runs is not None and runs >= args.max_runs:
            scheduler.shutdown(wait=False)

    when = "every " + args.every if args.every else "cron " + args.cron
    print(f"scheduled {args.catalog} ({when}) on the server {client.base_url}; Ctrl-C to stop", flush=True)
    first = None
    if isinstance(trigger, IntervalTrigger):
        from datetime import datetime

        first = datetime.now(UTC)
    scheduler.add_job(tick, trigger, next_run_time=first, max_instances=1, coalesce=True, misfire_grace_time=None)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


def _follow(client: ShopLensClient, job: schemas.Job, args: argparse.Namespace) -> int:
    """Follow the job to its end, printing progress on a terminal; Ctrl-C stops following only."""
    quiet = getattr(args, "quiet", False) or args.json or not sys.stderr.isatty()
    last = [0.0]

    def show(j: schemas.Job) -> None:
        if quiet or time.monotonic() - last[0] < 1.0:
            return
        last[0] = time.monotonic()
        rate = f", {j.images_per_second:.1f} images/s" if j.images_per_second else ""
        print(f"\r{j.status}: {j.done}/{j.total or '?'} products{rate}   ", end="", file=sys.stderr, flush=True)

    try:
        job = client.wait_job(job.id, on_progress=show)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job.id} goes on in the server", file=sys.stderr)
        return 0
    if not quiet:
        print(file=sys.stderr)
    report = getattr(args, "report", None)
    if report is not None and job.run_id is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_bytes(client.run_report(job.run_id))
    if args.json:
        seconds = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        print(
            json.dumps(
                {
                    "job": job.id,
                    "run_id": job.run_id,
                    "status": job.status,
                    "seconds": seconds,
                    "errors": job.problem_count,
                    **job.counts,
                }
            )
        )
    else:
        print(job.message or f"job {job.id} {job.status}")
        for problem in job.problems[:10]:
            print(f"  {RowError(**problem)}", file=sys.stderr)
        if job.problem_count > 10:
            print(f"  … and {job.problem_count - 10} more", file=sys.stderr)
    return exit_code(job.status)

"""Scheduled runs, one run at a time, catalog URLs, reconcile, and a database that goes away."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ingest.locking import LockBusy, ingest_lock
from ingest.pipeline import ingestor_for
from ingest.readers import CatalogError
from ingest.reconcile import collect_stats, reconcile
from ingest.sources import load_catalog
from server.schedule import CatalogSchedule, make_trigger, parse_every
from services.catalog.store import CatalogUnavailable
from services.context import ShopLens
from services.vectors import IMAGE, PointData
from tests.support.catalog import read_rows, write_catalog, write_rows
from tests.support.http_server import RouteServer
from tests.support.tcp_proxy import TcpProxy


def test_a_schedule_touches_only_changed_rows(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 6)
    lines: list[str] = []
    schedule = CatalogSchedule(app, str(catalog), prune=True, echo=lines.append)
    first = schedule.run_once()
    assert first and first.counts.new == 6 and first.counts.images_embedded == 6
    rows = read_rows(catalog)
    rows[0]["price"] = "1.00"
    rows[1]["title"] = "Renamed"
    write_rows(catalog, rows[:5])  # SKU-0005 left the catalog
    second = schedule.run_once()
    c = second.counts
    assert (c.new, c.changed, c.unchanged, c.pruned, c.images_embedded, c.texts_embedded) == (0, 2, 3, 1, 0, 1)
    runs = app.catalog.list_runs()
    assert [r.trigger for r in runs[:2]] == ["schedule", "schedule"] and runs[0].pruned == 1
    assert collect_stats(app)["consistent"]


def test_schedule_arguments() -> None:
    assert parse_every("2h30m").total_seconds() == 9000 and parse_every("45s").total_seconds() == 45
    for bad in ("soon", "10x", "0m", ""):
        with pytest.raises(ValueError):
            parse_every(bad)
    assert make_trigger(None, "0 * * * *")
    with pytest.raises(ValueError, match="cron"):
        make_trigger(None, "every hour")
    with pytest.raises(ValueError, match="exactly one"):
        make_trigger("1h", "0 * * * *")


def test_never_two_runs_at_once(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 3)
    held, release = threading.Event(), threading.Event()

    def other_scheduler() -> None:
        with ingest_lock(app.catalog, app.settings.home, wait=0):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_scheduler)
    thread.start()
    assert held.wait(10)
    lines: list[str] = []
    skipped = CatalogSchedule(app, str(catalog), echo=lines.append).run_once()
    assert skipped is None and any("another ingest run is in progress" in line for line in lines)
    with pytest.raises(LockBusy):
        ingestor_for(app).ingest(load_catalog(str(catalog)), wait=0.2)
    started = time.monotonic()
    waiter = threading.Thread(target=lambda: ingestor_for(app).ingest(load_catalog(str(catalog)), wait=None))
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive()  # a waiting run waits…
    release.set()
    waiter.join(60)
    thread.join()
    assert not waiter.is_alive() and time.monotonic() - started >= 1.0  # …and then runs
    assert app.catalog.list_runs()[0].status == "succeeded" and collect_stats(app)["consistent"]


def test_catalog_urls(app: ShopLens, tmp_path: Path, route_server: RouteServer) -> None:
    shop_server = route_server.url
    catalog = write_catalog(tmp_path / "shop", 3)
    images = {
        f"/images/{p.name}": (200, "image/jpeg", p.read_bytes(), 0.0) for p in (tmp_path / "shop" / "images").iterdir()
    }
    route_server.routes.update(
        {
            "/export.csv": (200, "text/csv", catalog.read_bytes(), 0.0),
            "/login.csv": (200, "text/html; charset=utf-8", b"<html><body>Please log in</body></html>", 0.0),
            "/slow.csv": (200, "text/csv", catalog.read_bytes(), 3.0),
            "/broken.csv": (503, "text/plain", b"maintenance", 0.0),
            **images,
        }
    )
    result = ingestor_for(app).ingest(load_catalog(f"{shop_server}/export.csv"))
    assert result.counts.new == 3 and not result.errors  # relative image paths resolve against the URL
    before = collect_stats(app)
    for path, message in [
        ("/login.csv", "HTML page"),
        ("/slow.csv", "timed out"),
        ("/broken.csv", "HTTP 503"),
        ("/missing.csv", "HTTP 404"),
    ]:
        with pytest.raises(CatalogError, match=message):
            load_catalog(f"{shop_server}{path}", timeout=1.0)
    with pytest.raises(CatalogError, match="unreachable"):
        load_catalog("http://127.0.0.1:9/export.csv", timeout=1.0)
    assert collect_stats(app) == before  # nothing changed
    lines: list[str] = []
    assert CatalogSchedule(app, f"{shop_server}/login.csv", echo=lines.append).run_once() is None
    assert app.catalog.list_runs()[0].status == "failed" and "HTML" in app.catalog.list_runs()[0].message


def test_reconcile_finds_and_repairs_drift(app: ShopLens, tmp_path: Path) -> None:
    ingestor = ingestor_for(app)
    ingestor.ingest(load_catalog(str(write_catalog(tmp_path / "shop", 5))))
    points = {pid: payload for pid, payload in app.vectors.all_points()}
    image_ids = [pid for pid, p in points.items() if p["kind"] == IMAGE]
    app.vectors.delete_ids(image_ids[:2])  # missing
    orphan = PointData(
        "00000000-0000-0000-0000-000000000001",
        IMAGE,
        app.embedder.embed_text("x") if app.embedder.identity.cross_modal else None,
        {"sku": "GONE", "kind": IMAGE},
    )
    app.vectors.upsert([orphan])  # orphan
    app.vectors.set_payloads({image_ids[3]: {**points[image_ids[3]], "price": 12345.0}})  # stale
    dry = reconcile(ingestor, dry_run=True)
    assert (dry.missing, dry.orphans, dry.stale_payloads, dry.repaired) == (2, 1, 1, False)
    assert not collect_stats(app)["consistent"]
    again = reconcile(ingestor, dry_run=True)  # a dry run changed nothing
    assert (again.missing, again.orphans, again.stale_payloads) == (2, 1, 1)
    fixed = reconcile(ingestor)
    assert fixed.repaired and fixed.images_embedded == 2
    assert reconcile(ingestor, dry_run=True).clean and collect_stats(app)["consistent"]


def test_database_going_away_fails_clearly_and_the_next_run_completes(
    settings_factory, postgres_url: str, tmp_path: Path
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    proxy = TcpProxy(url.host, url.port)
    app = ShopLens(
        settings_factory(
            database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
            ingest_batch_size=2,
            ingest_retries=2,
        )
    )
    try:
        catalog = load_catalog(str(write_catalog(tmp_path / "shop", 8)))
        ingestor = ingestor_for(app)
        cut = threading.Event()

        def progress(done: int, total: int) -> None:
            if done >= 4 and not cut.is_set():
                cut.set()
                proxy.cut()

        started = time.monotonic()
        with pytest.raises(CatalogUnavailable, match="the database connection was lost and did not come back"):
            ingestor.ingest(catalog, progress=progress)  # one clear error, not the driver's
        assert time.monotonic() - started < 60  # bounded retries, not a hang
        proxy.restore()
        result = ingestor_for(app).ingest(catalog)
        assert result.status == "succeeded" and result.counts.new + result.counts.unchanged == 8
        stats = collect_stats(app)
        assert stats["consistent"] and stats["sql"]["products"] == 8
        statuses = [r.status for r in app.catalog.list_runs()]
        assert statuses[0] == "succeeded" and statuses[1] == "interrupted"  # recorded by the next run
    finally:
        app.close()
        proxy.close()


def test_two_scheduler_processes_never_overlap(
    settings_factory, postgres_url: str, tmp_path: Path, openclip_env: dict[str, str]
) -> None:
    """Two real `shoplens schedule` processes on one PostgreSQL store: the advisory lock serialises them.

    The test holds the store's lock until both schedulers have found it busy at least once, then
    lets them compete. (Each gets its own home only because the embedded Qdrant folder admits one
    process; deployed schedulers share a Qdrant server. What is checked here is the lock, through
    SQL's run history.)
    """
    import os
    import subprocess
    import sys

    import sqlalchemy as sa

    catalog = write_catalog(tmp_path / "shop", 12)
    holder = ShopLens(settings_factory(database_url=postgres_url, home=tmp_path / "holder"))
    outputs: list[list[str]] = [[], []]
    procs = []
    try:
        with ingest_lock(holder.catalog, holder.settings.home, wait=0):
            (tmp_path / "media").mkdir()
            for index, name in enumerate(("a", "b")):
                # deployed schedulers share the media volume too: each home's vectors are re-synced
                # from it when that home finds them missing (the other home wrote them elsewhere)
                (tmp_path / name).mkdir()
                (tmp_path / name / "media").symlink_to(tmp_path / "media", target_is_directory=True)
                env = {
                    **os.environ,
                    **openclip_env,
                    "SHOPLENS_HOME": str(tmp_path / name),
                    "SHOPLENS_DATABASE_URL": postgres_url,
                    "SHOPLENS_INGEST_BATCH_SIZE": "2",
                }
                env.pop("SHOPLENS_QDRANT_URL", None)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "schedule", str(catalog), "--every", "1s", "--max-runs", "15"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                threading.Thread(target=lambda p=proc, out=outputs[index]: out.extend(p.stdout), daemon=True).start()
                procs.append(proc)
            deadline = time.monotonic() + 180
            while not all(any("skipped: another ingest run is in progress" in line for line in out) for out in outputs):
                assert time.monotonic() < deadline, outputs
                time.sleep(0.2)
        for proc in procs:
            proc.wait(300)
    finally:
        holder.close()
        for proc in procs:
            proc.kill()
    assert all(p.returncode == 0 for p in procs), outputs
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        runs = conn.execute(
            sa.text("SELECT started_at, finished_at, status FROM ingest_runs ORDER BY started_at")
        ).all()
    engine.dispose()
    assert len(runs) >= 2 and all(r.status == "succeeded" for r in runs), runs  # both ran once the lock was free
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.started_at >= earlier.finished_at, runs  # never two at once

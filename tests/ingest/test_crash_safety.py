"""Kill a real `shoplens ingest` with SIGKILL at every checkpoint, re-run it, and check that SQL
and Qdrant agree: nothing lost, nothing duplicated, no orphan vector, no product without vectors.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import ingestor_for
from ingest.reconcile import collect_stats, reconcile
from services.context import ShopLens
from services.settings import Settings
from tests.support.catalog import product_photo, read_rows, write_catalog, write_rows
from tests.support.cli import shoplens


@pytest.fixture
def shop(tmp_path: Path, openclip_env: dict[str, str]):
    env = {**os.environ, **openclip_env, "SHOPLENS_HOME": str(tmp_path / "home"), "SHOPLENS_INGEST_BATCH_SIZE": "3"}
    for key in ("SHOPLENS_DATABASE_URL", "SHOPLENS_QDRANT_URL", "SHOPLENS_CRASH_AT"):
        env.pop(key, None)

    def run(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
        """A run to be killed is a real process; the runs before and after it need not be."""
        if crash_at is None:
            return shoplens(*args, env=env)
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env={**env, "SHOPLENS_CRASH_AT": crash_at},
            capture_output=True,
            text=True,
            timeout=300,
        )

    catalog = write_catalog(tmp_path / "shop", 10)
    return run, catalog, env


def check(env: dict[str, str], products: int, images: int) -> None:
    settings = Settings(
        _env_file=None, home=env["SHOPLENS_HOME"], embedder="openclip", openclip_model=env["SHOPLENS_OPENCLIP_MODEL"]
    )
    app = ShopLens(settings)
    try:
        stats = collect_stats(app)
        assert stats["sql"] == {"products": products, "images": images, "unsynced": 0}, stats
        assert stats["qdrant"] == {"image_points": images, "text_points": products}, stats
        assert stats["consistent"]
        drift = reconcile(ingestor_for(app), dry_run=True)
        assert drift.clean, drift.summary()
        assert app.catalog.list_runs()[0].status == "succeeded"
        assert "interrupted" in {r.status for r in app.catalog.list_runs()}  # the killed run is on record
    finally:
        app.close()


def killed(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    "point", ["after-sql:1", "after-sql:3", "after-upsert:2", "after-delete-stale:3", "after-synced:1"]
)
def test_first_ingest_killed_then_rerun(shop, point: str) -> None:
    run, catalog, env = shop
    assert killed(run("ingest", str(catalog), crash_at=point))
    rerun = run("ingest", str(catalog), "--json")
    assert rerun.returncode == 0, rerun.stderr
    check(env, 10, 10)


def test_changed_catalog_killed_mid_update(shop) -> None:
    run, catalog, env = shop
    assert run("ingest", str(catalog)).returncode == 0
    rows = read_rows(catalog)
    for i in (1, 4, 7):
        product_photo(90000 + i).save(catalog.parent / "images" / f"new{i}.jpg")
        rows[i]["image"] = f"images/new{i}.jpg"  # new photo: the old point must go, the new one come
        rows[i]["price"] = "3.00"
    write_rows(catalog, rows)
    assert killed(run("ingest", str(catalog), crash_at="after-upsert:1"))
    assert run("ingest", str(catalog)).returncode == 0
    check(env, 10, 10)


def test_prune_killed_between_sql_and_qdrant(shop) -> None:
    run, catalog, env = shop
    assert run("ingest", str(catalog)).returncode == 0
    write_rows(catalog, read_rows(catalog)[:6])
    assert killed(run("ingest", str(catalog), "--prune", crash_at="prune-after-sql"))
    assert run("ingest", str(catalog), "--prune").returncode == 0
    check(env, 6, 6)


def test_reindex_killed_after_dropping_vectors(shop) -> None:
    run, catalog, env = shop
    assert run("ingest", str(catalog)).returncode == 0
    assert killed(run("reindex", crash_at="reindex-after-drop"))
    assert run("ingest", str(catalog)).returncode == 0  # a plain run finishes the pending work
    check(env, 10, 10)


def _synced(db: Path) -> int:
    """Products whose vectors have landed, read while a run writes (-1 before its tables exist)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as conn:
            return int(conn.execute("SELECT count(*) FROM products WHERE synced_state IS NOT NULL").fetchone()[0])
    except sqlite3.Error:
        return -1


def test_killed_at_arbitrary_moments(shop) -> None:
    """SIGKILL between checkpoints, three times over: each run is killed once a batch more than
    before it has landed, plus a short pause that moves the kill to no step in particular. Each
    kill must land mid-run (the process was still working), and the run after them settles all."""
    run, catalog, env = shop
    rows = read_rows(catalog)
    for i in range(10, 40):  # long enough that a run is still working when it is killed
        product_photo(1000 * i).save(catalog.parent / "images" / f"p{i}-0.jpg")
        rows.append({**rows[0], "sku": f"SKU-{i:04d}", "title": f"Product {i}", "image": f"images/p{i}-0.jpg"})
    write_rows(catalog, rows)
    db = Path(env["SHOPLENS_HOME"]) / "shoplens.db"
    for pause in (0.0, 0.03, 0.07):
        before = _synced(db)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "ingest", str(catalog)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while _synced(db) < max(before, 0) + 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(pause)
        proc.kill()
        assert proc.wait(30) == -signal.SIGKILL, f"the run ended before it was killed ({pause} s after a batch)"
    landed = _synced(db)
    assert 3 <= landed < 40, landed  # the kills left work for the last run
    final = run("ingest", str(catalog), "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["status"] == "succeeded"
    check(env, 40, 40)


def test_sigterm_finishes_the_batch_and_records_an_interrupted_run(shop, tmp_path: Path) -> None:
    import sqlite3

    run, catalog, env = shop
    rows = read_rows(catalog)
    for i in range(10, 40):  # a longer catalog so the signal lands mid-run
        product_photo(1000 * i).save(catalog.parent / "images" / f"p{i}-0.jpg")
        rows.append({**rows[0], "sku": f"SKU-{i:04d}", "title": f"Product {i}", "image": f"images/p{i}-0.jpg"})
    write_rows(catalog, rows)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "ingest", str(catalog)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = Path(env["SHOPLENS_HOME"]) / "shoplens.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT count(*) FROM products WHERE synced_state IS NOT NULL").fetchone()[0] >= 3:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "finishing the current batch" in err and "Traceback" not in err
    assert "interrupted" in out
    settings = Settings(
        _env_file=None, home=env["SHOPLENS_HOME"], embedder="openclip", openclip_model=env["SHOPLENS_OPENCLIP_MODEL"]
    )
    app = ShopLens(settings)
    try:
        stats = collect_stats(app)
        landed = stats["sql"]["products"]
        assert 3 <= landed < 40 and stats["consistent"], stats  # whole batches only, all of them synced
        assert app.catalog.list_runs()[0].status == "interrupted"
    finally:
        app.close()
    assert run("ingest", str(catalog)).returncode == 0
    check(env, 40, 40)

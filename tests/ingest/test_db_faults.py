"""A real `shoplens ingest` whose database goes away mid-run, and what runs tell about their end.

PostgreSQL sits behind a real TCP proxy on loopback (tests/support/tcp_proxy.py). The proxy cuts
the connections just before a chosen SQL statement reaches the server (the n-th
`INSERT INTO products`: with two products a batch, the n-th batch), so each fault lands at the same
step of the run every time, with no sleeps. Checks run inside the proxy while the run waits for
that statement, so "could a second run start now?" is asked at an exact moment too.

The faults hit the last of four batches: no next batch is being read meanwhile, so the only
statement in flight when the connections drop is the one the proxy holds back.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ingest.locking import LockBusy, ingest_lock
from services.catalog.store import CatalogStore
from tests.support.catalog import write_catalog
from tests.support.cli import shoplens
from tests.support.fake_dashscope import FakeDashScope
from tests.support.tcp_proxy import TcpProxy

INSERT = b"INSERT INTO products "  # one statement per batch of new products


@dataclass
class Shop:
    """A home, a catalog of 8 products, and the `shoplens` command on a PostgreSQL store behind a
    proxy (`run`), or straight at the database (`direct`), for checks the proxy must not affect."""

    home: Path
    catalog: Path
    proxy: TcpProxy
    store: CatalogStore  # straight at the database: "another run" of the tests
    env: dict[str, str]
    direct_url: str

    def run(self, *args: str, direct: bool = False) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "SHOPLENS_DATABASE_URL": self.direct_url} if direct else self.env
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, timeout=300
        )

    def runs(self) -> list[dict]:
        return list(json.loads(self.look("runs", "--json")))

    def stats(self) -> dict:
        return dict(json.loads(self.look("stats", "--json")))

    def look(self, *args: str) -> str:
        """A read-only command straight at the database, in this process: its checks need no
        process of their own, and each would cost seconds of imports."""
        proc = shoplens(*args, env={**self.env, "SHOPLENS_DATABASE_URL": self.direct_url})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def second_run_is_refused(self) -> None:
        """What a second `shoplens ingest` does first: take the store's lock. It must be busy."""
        with pytest.raises(LockBusy), ingest_lock(self.store, self.home.parent / "other", wait=0):
            pass


def cli_env(home: Path, openclip_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**os.environ, **openclip_env, "SHOPLENS_HOME": str(home)}
    for key in ("SHOPLENS_DATABASE_URL", "SHOPLENS_QDRANT_URL", "SHOPLENS_CRASH_AT", "SHOPLENS_SERVER_URL"):
        env.pop(key, None)
    return {**env, **extra}


@pytest.fixture
def shop(postgres_url: str, tmp_path: Path, openclip_env: dict[str, str]) -> Iterator[Shop]:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    home = tmp_path / "home"
    env = cli_env(
        home,
        openclip_env,
        SHOPLENS_DATABASE_URL=proxied,
        SHOPLENS_INGEST_BATCH_SIZE="2",
        SHOPLENS_INGEST_RETRIES="2",
    )
    store = CatalogStore(postgres_url)
    try:
        yield Shop(home, write_catalog(tmp_path / "shop", 8), proxy, store, env, postgres_url)
    finally:
        store.close()
        proxy.close()


def other_lines(stderr: str) -> list[str]:
    """stderr without the embedder announcement every ingest starts with."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("embedder:")]


@pytest.mark.parametrize("outage", ["dropped", "silent"])
def test_a_connection_drop_mid_run_is_survived_and_the_store_stays_locked(shop: Shop, outage: str) -> None:
    """Every connection of the run drops as the last batch is written: `dropped` closes both ends
    (a database restart), `silent` only the client's, so the server keeps the run's old session
    and its lock (a network path dying quietly). Either way the batch is retried, the lock is
    taken back before it, and no second run can start meanwhile."""

    def outage_now() -> None:
        shop.proxy.cut() if outage == "dropped" else shop.proxy.partition()
        shop.proxy.restore()

    drop = shop.proxy.on_message(INSERT, outage_now, nth=4)
    retried = shop.proxy.on_message(INSERT, shop.second_run_is_refused, nth=5)
    proc = shop.run("ingest", str(shop.catalog))
    assert drop.fired.is_set() and retried.fired.is_set()
    retried.check()
    assert proc.returncode == 0, proc.stderr
    assert other_lines(proc.stderr) == [], proc.stderr  # no traceback, no error line
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run 1 succeeded: 8 rows — 8 new, 0 changed"), proc.stdout
    assert lines[-1].startswith("report: ")
    stats = shop.stats()
    assert stats["sql"] == {"products": 8, "images": 8, "unsynced": 0}, stats  # every product landed once
    assert stats["qdrant"] == {"image_points": 8, "text_points": 8} and stats["consistent"], stats
    assert [(r["id"], r["status"]) for r in shop.runs()] == [(1, "succeeded")]
    with ingest_lock(shop.store, shop.home.parent / "other", wait=0):
        pass  # and the run let go of the store when it ended


def test_a_run_whose_store_was_taken_during_the_drop_stops_cleanly(shop: Shop) -> None:
    """While the run's connections are down, another run takes the store: when the database is
    back, the first run must not write on beside it."""
    held = contextlib.ExitStack()

    def another_run_takes_the_store() -> None:
        shop.proxy.cut()
        held.enter_context(ingest_lock(shop.store, shop.home.parent / "other", wait=30))
        shop.proxy.restore()

    with held:
        taken = shop.proxy.on_message(INSERT, another_run_takes_the_store, nth=4)
        proc = shop.run("ingest", str(shop.catalog))
        taken.check()
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        lines = other_lines(proc.stderr)
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("shoplens: error: the database connection dropped mid-run and another ingest run")
        (run,) = shop.runs()
        assert run["status"] == "failed" and "another ingest run took the store" in run["message"], run
        assert shop.stats()["sql"]["products"] == 6  # the first three batches, nothing after the drop
    again = shop.run("ingest", str(shop.catalog))
    assert again.returncode == 0, again.stderr
    stats = shop.stats()
    assert stats["sql"]["products"] == 8 and stats["consistent"], stats


def test_a_permanent_outage_is_one_clear_line_and_the_next_run_settles_it(shop: Shop) -> None:
    """The database goes away for good mid-run: one line says so (no traceback without --debug),
    the exit code is non-zero, and once the database is back the next run marks the run
    abandoned, finishes its work, and only then says the work is done."""
    down = shop.proxy.on_message(INSERT, shop.proxy.cut, nth=4)
    proc = shop.run("ingest", str(shop.catalog))
    assert down.fired.is_set()
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = other_lines(proc.stderr)
    assert line.startswith("shoplens: error: run 1 stopped: the database connection was lost"), line
    assert "[SQL:" not in line and "next run will record it as abandoned" in line, line
    shop.proxy.restore()
    assert [(r["id"], r["status"]) for r in shop.runs()] == [(1, "running")]
    again = shop.run("ingest", str(shop.catalog))
    assert again.returncode == 0, again.stderr
    second, first = shop.runs()
    assert second["status"] == "succeeded" and first["status"] == "interrupted"
    assert first["message"].startswith("abandoned") and "run 2 has since finished its pending work" in first["message"]
    assert shop.stats()["consistent"]


# -- what a run's record and exit code say, on SQLite and PostgreSQL --------------------------------
@pytest.fixture
def cli(database_url: str, tmp_path: Path, openclip_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    env = cli_env(tmp_path / "home", openclip_env, SHOPLENS_DATABASE_URL=database_url, SHOPLENS_INGEST_BATCH_SIZE="3")

    def run(*args: str, process: bool = False, **extra: str) -> subprocess.CompletedProcess[str]:
        """`process`: a real subprocess, for runs that are killed; the rest run in this process."""
        if not process:
            return shoplens(*args, env={**env, **extra})
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


def test_an_abandoned_run_claims_no_work_done_until_a_later_run_did_it(cli, tmp_path: Path) -> None:
    """A killed run's record says the next run resumes its work, not that it completed it: the
    next run may be killed too. Once a run finishes with nothing pending, they say so."""
    catalog = write_catalog(tmp_path / "shop", 8)
    for _ in range(2):
        killed = cli("ingest", str(catalog), process=True, SHOPLENS_CRASH_AT="after-sql:2")
        assert killed.returncode == -9, killed.stderr
    runs = json.loads(cli("runs", "--json").stdout)
    assert [(r["id"], r["status"]) for r in runs] == [(2, "running"), (1, "interrupted")]
    assert runs[1]["message"].startswith("abandoned") and "the next run resumes its pending work" in runs[1]["message"]
    assert "completed" not in runs[1]["message"] and "finished its" not in runs[1]["message"]
    done = cli("ingest", str(catalog))
    assert done.returncode == 0, done.stderr
    runs = json.loads(cli("runs", "--json").stdout)
    assert [(r["id"], r["status"]) for r in runs] == [(3, "succeeded"), (2, "interrupted"), (1, "interrupted")]
    for run in runs[1:]:
        assert "run 3 has since finished its pending work" in run["message"], run
    shown = cli("runs").stdout  # the listing people read says the same
    assert shown.count("run 3 has since finished its pending work") == 2, shown


def _dashscope(fake: FakeDashScope) -> dict[str, str]:
    return {
        "SHOPLENS_EMBEDDER": "dashscope",
        "SHOPLENS_DASHSCOPE_BASE_URL": fake.base_url,
        "SHOPLENS_DASHSCOPE_API_KEY": fake.api_key,
        "SHOPLENS_DASHSCOPE_REQUESTS_PER_MINUTE": "100000",
    }


def test_a_run_where_every_embedding_failed_is_a_failure(cli, tmp_path: Path, fake_dashscope: FakeDashScope) -> None:
    """The embedding service refuses every product: nothing the run wrote is searchable, so the run
    failed (exit 1, the summary says why), where a run with some embeddings through is partial."""
    catalog = write_catalog(tmp_path / "shop", 4)
    fake_dashscope.reset()
    try:
        fake_dashscope.queue_fault("data_inspection", times=1000)
        proc = cli("ingest", str(catalog), **_dashscope(fake_dashscope))
        assert proc.returncode == 1, proc.stderr
        summary = proc.stdout.splitlines()[0]
        assert summary.startswith("run 1 failed: 4 rows — 4 new"), summary
        assert "every embedding failed (4 product(s)" in summary and "DataInspectionFailed" in summary, summary
        as_json = json.loads(cli("ingest", str(catalog), "--json", **_dashscope(fake_dashscope)).stdout)
        assert as_json["status"] == "failed" and "every embedding failed" in as_json["message"], as_json
        fake_dashscope.reset()
        fake_dashscope.queue_fault("data_inspection", times=1)  # one photo refused, the rest through
        proc = cli("ingest", str(catalog), "--json", **_dashscope(fake_dashscope))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["status"] == "partial"
    finally:
        fake_dashscope.reset()
    runs = json.loads(cli("runs", "--json").stdout)
    assert [r["status"] for r in runs] == ["partial", "failed", "failed"]
    assert "every embedding failed" in runs[2]["message"]


def test_a_server_job_stopped_by_an_outage_is_recorded_failed_when_the_database_is_back(
    settings_factory, postgres_url: str, tmp_path: Path
) -> None:
    """In a server the process lives on after the outage, and beats for its jobs: a job (and its
    run) whose failure the database could not be told would show as running for good. The queue
    keeps those ends and writes them once the database answers (its heartbeat calls `settle`;
    called here by hand)."""
    from server.jobs import JobQueue, JobRequest
    from services.context import ShopLens

    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    app = ShopLens(settings_factory(database_url=proxied, ingest_batch_size=2, ingest_retries=1))
    try:
        catalog = write_catalog(tmp_path / "shop", 8)
        queue = JobQueue(app, "server-under-test")  # not started: the test runs its job by hand
        job = queue.submit(JobRequest("ingest", "api", str(catalog), {"path": str(catalog)}))
        down = proxy.on_message(INSERT, proxy.cut, nth=4)
        claimed = queue._claim()
        assert claimed == job.id
        queue._execute(claimed)
        assert down.fired.is_set()
        proxy.restore()
        seen = queue.get(job.id)
        assert seen is not None and seen.status == "running"  # the database missed the end…
        assert [r.status for r in app.catalog.list_runs()] == ["running"]
        queue.settle()  # …and is told once it is back
        seen = queue.get(job.id)
        assert seen is not None and seen.status == "failed" and seen.finished, seen
        assert seen.message and "the database connection was lost" in seen.message, seen
        (run,) = app.catalog.list_runs()
        assert run.status == "failed" and run.message and "connection" in run.message, run.message
    finally:
        app.close()
        proxy.close()


def test_a_retried_write_does_not_wait_on_the_locks_of_its_own_lost_session(postgres_url: str, tmp_path: Path) -> None:
    """A silent drop while a transaction had updated rows: the server keeps that session and its
    row locks, and the retried write would wait on them for good. Making sure of the run's lock
    (what every retry does first) ends this process's lost sessions, so the retry goes through."""
    import sqlalchemy as sa

    from services.catalog.models import Product

    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    store = CatalogStore(url.set(port=proxy.port).render_as_string(hide_password=False))
    try:
        with store.session() as session:
            session.add(Product(sku="A-1", title="A", row_hash="x"))
        with ingest_lock(store, tmp_path, wait=0) as lock:
            writer = store.engine.connect()
            writer.execute(sa.update(Product).where(Product.sku == "A-1").values(title="half-written"))
            proxy.partition()  # the server keeps the writer's session, its transaction and row lock
            proxy.restore()
            with pytest.raises(sa.exc.OperationalError):
                writer.execute(sa.text("SELECT 1"))  # the client learns its connection is gone
            writer.close()
            lock.ensure()  # what a retry does first
            with store.engine.connect() as again:
                again.execute(sa.text("SET lock_timeout = '5s'"))  # a wait on the lost lock fails here
                again.execute(sa.update(Product).where(Product.sku == "A-1").values(title="written"))
                again.commit()
        assert store.get_product("A-1").title == "written"
    finally:
        store.close()
        proxy.close()

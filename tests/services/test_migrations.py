"""Schema migrations on SQLite and PostgreSQL: old stores upgrade losing nothing, exactly once.

The previous release's store is built from a frozen copy of its schema (tests/support/schema_v1.py),
never from today's models, so these tests keep checking the upgrade users will really run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from filelock import FileLock

from services.catalog.migrate import MigrationResult, alembic_config, describe_revision, migrate
from services.catalog.models import Base, ImageSource, IngestRun, Job, StoreMeta
from services.catalog.store import CatalogStore, CatalogUnavailable, make_engine
from tests.conftest import POSTGRES_URL
from tests.support import schema_v1

ROOT = Path(__file__).resolve().parents[2]
BASELINE, SECOND, THIRD = "0001_baseline", "0002_jobs_and_meta", "0003_prices_and_image_retries"
HEAD = "0004_image_sources"
AFTER_BASELINE = (SECOND, THIRD, HEAD)
SHOPLENS_TABLES = {"products", "product_images", "ingest_runs", "jobs", "store_meta", "image_sources"}
OLD_SKUS = [f"OLD-{i:03d}" for i in range(5)]


# -- helpers -------------------------------------------------------------------------------------
@contextmanager
def opened(url: str) -> Iterator[CatalogStore]:
    store = CatalogStore(url)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def connected(url: str) -> Iterator[sa.Connection]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    with connected(url) as conn:
        return set(sa.inspect(conn).get_table_names())


def version_rows(url: str) -> list[str]:
    with connected(url) as conn:
        return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def schema_diff(url: str, metadata: sa.MetaData) -> list[object]:
    """What Alembic's autogenerate would change to make the database match `metadata`."""
    with connected(url) as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


def schema_of(url: str) -> str:
    return url.rsplit("search_path%3D", 1)[1].split("%2C")[0]


@contextmanager
def migration_lock_held(url: str) -> Iterator[None]:
    """Hold the store's migration lock the way another process upgrading it would."""
    if url.startswith("sqlite"):
        with FileLock(f"{sa.make_url(url).database}.migrate.lock"):
            yield
        return
    with connected(url) as conn, conn.begin():
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('shoplens-migrate:' || current_schema()))"))
        yield


@contextmanager
def extra_schema() -> Iterator[str]:
    """A second PostgreSQL schema in the test database, dropped afterwards; yields its name."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def other_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty store on the same backend (another file, or another schema)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with extra_schema() as schema:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def describe(url: str) -> str:
    engine = make_engine(url)
    try:
        return describe_revision(engine)
    finally:
        engine.dispose()


def migrate_url(url: str, **kw: float) -> MigrationResult:
    engine = make_engine(url)
    try:
        return migrate(engine, **kw)
    finally:
        engine.dispose()


def ddl_fingerprint(url: str) -> list[tuple[object, ...]]:
    """The schema as the database itself spells it (DDL text, index and constraint definitions)."""
    with connected(url) as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.execute(
                sa.text(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version' ORDER "
                    "BY name"
                )
            )
            return [tuple(row) for row in rows]
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        columns = conn.execute(
            sa.text(
                "SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length, "
                "numeric_precision,"
                " numeric_scale, is_nullable, column_default FROM information_schema.columns"
                " WHERE table_schema = :s AND table_name != 'alembic_version' ORDER BY table_name, ordinal_position"
            ),
            {"s": schema},
        )
        indexes = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s AND tablename != "
                "'alembic_version' ORDER BY indexname"
            ),
            {"s": schema},
        )
        constraints = conn.execute(
            sa.text(
                "SELECT c.conname, c.conrelid::regclass::text, pg_get_constraintdef(c.oid) FROM pg_constraint c"
                " JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = :s AND c.conname NOT LIKE "
                "'alembic_version%'"
                " ORDER BY c.conname"
            ),
            {"s": schema},
        )
        rows = [*columns, *indexes, *constraints]
        return [tuple(str(v).replace(schema, "<schema>") if v is not None else None for v in row) for row in rows]


def run_child(url: str) -> subprocess.Popen[str]:
    """Another ShopLens process opening the store: prints `ready`, then what its migration did."""
    code = (
        "import json, sys\n"
        "from services.catalog.store import CatalogStore\n"
        "print('ready', flush=True)\n"
        "m = CatalogStore(sys.argv[1]).migration\n"
        "print(json.dumps({'stamped': m.stamped, 'applied': list(m.applied), 'locked': m.locked, 'after': m.after}))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# -- the previous release's store ----------------------------------------------------------------
def test_previous_release_store_upgrades_keeping_every_row(database_url: str) -> None:
    schema_v1.create_v1_store(database_url)
    before = schema_v1.snapshot(database_url)
    assert (
        "recognised as revision 0001_baseline); 3 migration(s) pending: 0002_jobs_and_meta, "
        "0003_prices_and_image_retries, 0004_image_sources" in describe(database_url)
    )

    with opened(database_url) as store:
        assert (store.migration.before, store.migration.stamped, store.migration.applied) == (
            None,
            BASELINE,
            AFTER_BASELINE,
        )
        assert store.migration.locked and not store.migration.up_to_date
        assert "recognised as revision 0001_baseline" in store.migration.describe()
        assert store.schema_revision() == HEAD
        # the store's own API sees the old rows, fingerprints included
        products = store.get_products(OLD_SKUS)
        assert [products[sku].row_hash for sku in OLD_SKUS] == [f"{i:02d}" * 32 for i in range(5)]
        assert [products[sku].synced_state for sku in OLD_SKUS] == [
            None if i == 3 else f"{i + 50:02d}" * 32 for i in range(5)
        ]
        assert [len(products[sku].images) for sku in OLD_SKUS] == [i % 3 + 1 for i in range(5)]
        assert products["OLD-004"].attributes == {"color": "red", "sizes": [38, 43], "note": "é ü"}
        assert store.counts() == {"products": 5, "images": 9, "unsynced": 1}
        assert [run.status for run in store.list_runs()] == ["running", "failed", "ok"]
        assert store.list_runs()[0].errors == [{"row": 0, "error": "bad image 0"}, {"row": 1, "error": "bad image 1"}]

    assert schema_v1.snapshot(database_url) == before  # every row, every column, unchanged
    assert SHOPLENS_TABLES | {"alembic_version"} <= tables(database_url)
    assert version_rows(database_url) == [HEAD]
    assert schema_diff(database_url, Base.metadata) == []

    with opened(database_url) as again:  # the next start: nothing to do, no lock
        assert again.migration.up_to_date and not again.migration.locked
        assert again.migration.describe() == f"the database schema is up to date (revision {HEAD})"
    assert version_rows(database_url) == [HEAD]
    assert schema_v1.snapshot(database_url) == before


def test_upgraded_old_store_works_with_todays_models(database_url: str) -> None:
    schema_v1.create_v1_store(database_url, n_products=2)
    with opened(database_url) as store:
        run_id = store.start_run("cli", "/data/new.csv", "offline")
        with store.session() as session:
            session.add(Job(id="j1", run_id=run_id, params={"a": 1}))
            session.add(StoreMeta(key="embedder", value={"name": "offline"}))
            session.add(IngestRun(trigger="api"))  # ids keep counting after the old rows
        # the old FK keeps its ON DELETE CASCADE, the new one its ON DELETE SET NULL
        with store.session() as session:
            session.execute(sa.text("DELETE FROM products WHERE sku = 'OLD-001'"))
            session.execute(sa.delete(IngestRun).where(IngestRun.id == run_id))
        assert store.counts()["images"] == 1
        with store.session() as session:
            job = session.get(Job, "j1")
            assert job is not None and job.run_id is None and job.params == {"a": 1}
            assert session.get(StoreMeta, "embedder").value == {"name": "offline"}
        assert run_id == 4


def test_baseline_revision_is_exactly_the_previous_release_schema(database_url: str, other_url: str) -> None:
    schema_v1.create_v1_store(database_url, n_products=0)
    engine = make_engine(other_url)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(alembic_config(conn), BASELINE)
    finally:
        engine.dispose()
    assert schema_diff(other_url, schema_v1.metadata) == []
    assert ddl_fingerprint(other_url) == ddl_fingerprint(database_url)


def test_image_sources_revision_upgrades_and_downgrades_a_0003_store(database_url: str) -> None:
    """0004 only adds image_sources: a 0003 store's rows are untouched both ways."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(alembic_config(conn), THIRD)
            conn.execute(
                sa.text(
                    "INSERT INTO products (sku, title, description, in_stock, attributes, row_hash, image_failures,"
                    " created_at, updated_at) VALUES ('A-1', 'Lamp', '', true, '{}', :h, 2, :t, :t)"
                ),
                {"h": "ab" * 32, "t": "2026-11-30 12:00:00+00:00"},
            )
    finally:
        engine.dispose()
    with opened(database_url) as store:
        assert store.migration.before == THIRD and store.migration.applied == (HEAD,)
        with store.session() as session:
            session.add(
                ImageSource(
                    url_key="k" * 64,
                    url="https://cdn.example/a.jpg",
                    etag='"v1"',
                    sha256="c" * 64,
                    media_path="cc/x.jpg",
                    width=4,
                    height=3,
                )
            )
        assert store.get_products(["A-1"])["A-1"].image_failures == 2
    assert "image_sources" in tables(database_url) and schema_diff(database_url, Base.metadata) == []
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            command.downgrade(alembic_config(conn), THIRD)
    finally:
        engine.dispose()
    assert "image_sources" not in tables(database_url) and version_rows(database_url) == [THIRD]
    with connected(database_url) as conn:
        assert conn.execute(sa.text("SELECT sku, image_failures FROM products")).all() == [("A-1", 2)]


# -- fresh and newer stores ----------------------------------------------------------------------
def test_fresh_database_gets_head_directly(database_url: str) -> None:
    assert describe(database_url).startswith("empty database; 4 migration(s) pending")
    with opened(database_url) as store:
        assert (store.migration.before, store.migration.stamped, store.migration.applied) == (
            None,
            None,
            (BASELINE, SECOND, THIRD, HEAD),
        )
        assert store.schema_revision() == HEAD
        assert store.counts() == {"products": 0, "images": 0, "unsynced": 0}
        assert describe_revision(store.engine) == f"schema revision {HEAD} (up to date)"
    assert version_rows(database_url) == [HEAD]
    assert SHOPLENS_TABLES <= tables(database_url)
    assert schema_diff(database_url, Base.metadata) == []


def test_store_of_a_newer_shoplens_is_refused_untouched(database_url: str) -> None:
    schema_v1.create_v1_store(database_url, n_products=3)
    CatalogStore(database_url).close()
    with connected(database_url) as conn, conn.begin():
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0042_from_the_future'"))
    before, before_tables = schema_v1.snapshot(database_url), tables(database_url)

    with pytest.raises(CatalogUnavailable) as caught:
        CatalogStore(database_url)
    assert caught.value.message == (
        "this database was upgraded by a newer ShopLens (schema revision 0042_from_the_future); upgrade ShopLens to "
        "use it"
    )
    assert "newer than this ShopLens" in describe(database_url)
    assert version_rows(database_url) == ["0042_from_the_future"]
    assert tables(database_url) == before_tables
    assert schema_v1.snapshot(database_url) == before


def test_half_a_shoplens_schema_without_revision_is_refused(database_url: str) -> None:
    with connected(database_url) as conn, conn.begin():
        schema_v1.products.create(conn)
    with pytest.raises(CatalogUnavailable, match="has some ShopLens tables \\(products\\) but not others"):
        CatalogStore(database_url)
    assert tables(database_url) == {"products"}


def test_failed_upgrade_changes_nothing(database_url: str) -> None:
    """The upgrade is one transaction on both backends: a failure midway leaves the old store as it was."""
    schema_v1.create_v1_store(database_url, n_products=2)
    with connected(database_url) as conn, conn.begin():  # makes 0002's second CREATE TABLE fail
        conn.execute(sa.text("CREATE VIEW store_meta AS SELECT id FROM products"))
    before = schema_v1.snapshot(database_url)

    with pytest.raises((CatalogUnavailable, sa.exc.DBAPIError)):
        CatalogStore(database_url)
    assert tables(database_url) == {"products", "product_images", "ingest_runs"}  # no jobs, no alembic_version

    with connected(database_url) as conn, conn.begin():
        conn.execute(sa.text("DROP VIEW store_meta"))
    with opened(database_url) as store:
        assert store.migration.stamped == BASELINE and store.migration.applied == AFTER_BASELINE
    assert schema_v1.snapshot(database_url) == before


# -- locking -------------------------------------------------------------------------------------
def test_store_at_head_opens_without_taking_the_lock(database_url: str) -> None:
    CatalogStore(database_url).close()
    with migration_lock_held(database_url):  # another process "upgrading": an up-to-date start must not wait
        started = time.monotonic()
        with opened(database_url) as store:
            assert store.migration.up_to_date and not store.migration.locked
        assert migrate_url(database_url, lock_timeout=1).up_to_date
        assert time.monotonic() - started < 5


def test_upgrade_waits_for_the_lock_and_gives_up_clearly(database_url: str) -> None:
    schema_v1.create_v1_store(database_url, n_products=1)
    with migration_lock_held(database_url):
        with pytest.raises(
            CatalogUnavailable, match="another ShopLens process has been upgrading the database schema for over 1 s"
        ):
            migrate_url(database_url, lock_timeout=1)
    assert tables(database_url) == {"products", "product_images", "ingest_runs"}


def test_two_processes_starting_on_an_old_store_upgrade_it_once(database_url: str) -> None:
    schema_v1.create_v1_store(database_url)
    before = schema_v1.snapshot(database_url)
    with migration_lock_held(database_url):  # both children get past the revision check and queue on the lock
        children = [run_child(database_url) for _ in range(2)]
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        _wait_for_lock_waiters(database_url, 2)
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert all(r["locked"] and r["after"] == HEAD for r in results)
    upgraded = [r for r in results if r["applied"]]
    assert len(upgraded) == 1 and upgraded[0]["stamped"] == BASELINE and upgraded[0]["applied"] == list(AFTER_BASELINE)
    assert [(r["stamped"], r["applied"]) for r in results if r not in upgraded] == [
        (None, [])
    ]  # found head after waiting
    assert version_rows(database_url) == [HEAD]
    assert schema_v1.snapshot(database_url) == before


def _wait_for_lock_waiters(url: str, count: int) -> None:
    """PostgreSQL: until `count` sessions wait on the migration lock; SQLite: a moment (a file lock shows no queue)."""
    if url.startswith("sqlite"):
        time.sleep(3)
        return
    deadline = time.monotonic() + 60
    with connected(url) as conn:
        key = conn.execute(sa.text("SELECT hashtext('shoplens-migrate:' || current_schema())")).scalar()
        while time.monotonic() < deadline:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND "
                    "objid::text::bigint = :k"
                ),
                {"k": key & 0xFFFFFFFF},
            ).scalar()
            conn.commit()
            if waiting >= count:
                return
            time.sleep(0.1)
    pytest.fail(f"the children did not queue on the migration lock ({waiting} waiting)")


# -- PostgreSQL schemas --------------------------------------------------------------------------
def test_postgres_everything_lands_in_the_search_path_schema(postgres_url: str) -> None:
    schema = schema_of(postgres_url)
    with connected(POSTGRES_URL) as conn:
        public_version = conn.execute(sa.text("SELECT to_regclass('public.alembic_version')::text")).scalar()
    with opened(postgres_url) as store:
        assert store.engine.dialect.default_schema_name == schema
    with connected(POSTGRES_URL) as conn:
        found = dict(
            conn.execute(
                sa.text("SELECT table_name, table_schema FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).all()
        )
        assert found == {name: schema for name in SHOPLENS_TABLES | {"alembic_version"}}
        assert conn.execute(sa.text("SELECT to_regclass('public.alembic_version')::text")).scalar() == public_version


def test_postgres_revision_of_another_schema_on_the_path_is_not_ours(postgres_url: str) -> None:
    """With search_path `ours, other`, the other schema's alembic_version and tables must not count."""
    with extra_schema() as other:
        other_url = f"{POSTGRES_URL}?options=-csearch_path%3D{other}"
        with connected(other_url) as conn, conn.begin():
            schema_v1.metadata.create_all(conn)
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES ('0042_from_the_future')"))
        both = f"{POSTGRES_URL}?options=-csearch_path%3D{schema_of(postgres_url)}%2C{other}"

        with opened(both) as store:
            assert (store.migration.stamped, store.migration.applied) == (None, (BASELINE, SECOND, THIRD, HEAD))
            assert store.schema_revision() == HEAD
        assert version_rows(postgres_url) == [HEAD]
        assert SHOPLENS_TABLES <= tables(postgres_url)
        assert version_rows(other_url) == ["0042_from_the_future"]
        assert tables(other_url) == {"products", "product_images", "ingest_runs", "alembic_version"}

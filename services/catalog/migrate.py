"""Schema migrations: every start brings the store to this code's schema revision, losing nothing.

`create_all` only adds missing tables and never changes one, so an older store would silently lack
columns. Instead the schema is a chain of hand-written Alembic revisions (`migrations/versions/`),
and `migrate(engine)` applies the missing ones:

* at head already: one cheap read, no lock (this runs on every start);
* no `alembic_version` but ShopLens tables (made by `create_all` before migrations existed): the
  store is stamped with the revision those tables are, then upgraded;
* a revision this code does not know (a newer ShopLens upgraded it): refused, nothing touched;
* otherwise upgraded inside one transaction while holding a migration lock (a PostgreSQL advisory
  lock per schema, or a file next to the SQLite database), re-checking the revision once the lock
  is held, so processes starting together upgrade once. It is not the ingest lock: an ingest holds
  that one for minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock, Timeout
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from services.catalog.store import CatalogUnavailable

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
LOCK_TIMEOUT = 300.0  # seconds to wait for another process's upgrade before giving up

# Stores made by `create_all` carry no revision; the set of ShopLens tables tells which one they are.
_BASELINE_TABLES = frozenset({"products", "product_images", "ingest_runs"})
_CREATE_ALL_STORES = {
    _BASELINE_TABLES: "0001_baseline",  # the last release before migrations
    _BASELINE_TABLES | {"jobs", "store_meta"}: "0002_jobs_and_meta",  # development builds in between
}
_SHOPLENS_TABLES = frozenset().union(*_CREATE_ALL_STORES)


@dataclass(frozen=True)
class MigrationResult:
    """What `migrate` found and did; `describe()` is the line to show a person."""

    before: str | None  # the revision found; None: no alembic_version table
    after: str  # the revision the store is at now: this code's head
    stamped: str | None = None  # a store made by create_all, recognised as this revision
    applied: tuple[str, ...] = ()  # revisions run, oldest first
    locked: bool = False  # whether the migration lock was taken (never when already at head)

    @property
    def up_to_date(self) -> bool:
        """Nothing had to change (possibly because another process just did it)."""
        return self.stamped is None and not self.applied

    def describe(self) -> str:
        if self.up_to_date:
            return f"the database schema is up to date (revision {self.after})"
        if self.stamped:
            origin = f"a store made by an older ShopLens (recognised as revision {self.stamped})"
        else:
            origin = f"revision {self.before}" if self.before else "an empty database"
        ran = ", ".join(self.applied) if self.applied else "no migrations needed"
        return f"upgraded the database schema from {origin} to revision {self.after} ({ran})"


def alembic_config(connection: Connection, on_version_apply: Any = None) -> Config:
    """An Alembic config in code (no alembic.ini): our migrations, run on this open connection.

    Also what a developer passes to `alembic.command.revision(..., autogenerate=True)`.
    """
    config = _base_config()
    config.attributes["connection"] = connection
    config.attributes["version_table_schema"] = _schema(connection)
    config.attributes["on_version_apply"] = on_version_apply
    return config


def migrate(engine: Engine, lock_timeout: float = LOCK_TIMEOUT) -> MigrationResult:
    """Bring the store to this code's head revision (see the module docstring)."""
    head = _head()
    with engine.connect() as conn:
        found = _current(conn)
    _refuse_newer(found)
    if found == (head,):
        return MigrationResult(before=head, after=head)

    with _locked_transaction(engine, lock_timeout) as conn:
        found = _current(conn)  # another process may have upgraded while we waited
        _refuse_newer(found)
        before = ",".join(found) or None
        if found == (head,):
            return MigrationResult(before=before, after=head, locked=True)
        stamped = None if found else _created_by(conn)
        applied: list[str] = []

        def _record(step: Any, **_: Any) -> None:
            if step.is_migration and step.is_upgrade:
                applied.append(step.up_revision_id)

        config = alembic_config(conn, on_version_apply=_record)
        if stamped:
            command.stamp(config, stamped)
        command.upgrade(config, "head")
        _check_foreign_keys(conn)
    return MigrationResult(before=before, after=head, stamped=stamped, applied=tuple(applied), locked=True)


def current_revision(engine: Engine) -> str | None:
    """The store's revision (None: no alembic_version table, i.e. empty or made by create_all)."""
    with engine.connect() as conn:
        return ",".join(_current(conn)) or None


def describe_revision(engine: Engine) -> str:
    """One line on the store's schema and what `migrate` would do; changes nothing, takes no lock."""
    head = _head()
    with engine.connect() as conn:
        found = _current(conn)
        try:
            created_by = None if found else _created_by(conn)
        except CatalogUnavailable as exc:
            return exc.message
    if found == (head,):
        return f"schema revision {head} (up to date)"
    unknown = [rev for rev in found if rev not in _known()]
    if unknown:
        return (
            f"schema revision {', '.join(unknown)}: newer than this ShopLens (it knows up to {head}); "
            "upgrade ShopLens to use it"
        )
    if found:
        state = f"schema revision {','.join(found)}"
    elif created_by:
        state = f"no schema revision: a store made by an older ShopLens (recognised as revision {created_by})"
    else:
        state = "empty database"
    pending = _pending(found or ((created_by,) if created_by else ()))
    return (
        f"{state}; {len(pending)} migration(s) pending: {', '.join(pending)} "
        "(applied at the next start or by `shoplens migrate`)"
    )


# -- internals ---------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    """Parsed once per process: the at-head check runs on every start and must stay cheap."""
    return ScriptDirectory.from_config(_base_config())


def _base_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))  # configparser syntax
    return config


@lru_cache(maxsize=1)
def _head() -> str:
    head = _script().get_current_head()
    assert head is not None, "no migrations found"
    return head


@lru_cache(maxsize=1)
def _known() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


def _pending(current: tuple[str, ...]) -> list[str]:
    lower = current[0] if len(current) == 1 else "base"
    return [
        s.revision for s in reversed(list(_script().iterate_revisions("heads", lower))) if s.revision not in current
    ]


def _schema(conn: Connection) -> str | None:
    """PostgreSQL: the schema this connection's search_path resolves to; SQLite: None.

    Asked of the connection rather than the engine's cached default, and passed to Alembic as the
    version table's schema: with a search_path of several schemas Alembic would otherwise find an
    alembic_version of another schema further down the path.
    """
    if conn.dialect.name != "postgresql":
        return None
    schema = conn.execute(text("SELECT current_schema()")).scalar()
    if schema is None:
        path = conn.execute(text("SHOW search_path")).scalar()
        raise CatalogUnavailable(
            f"no schema of the PostgreSQL search_path ({path}) exists; create it or fix the database URL"
        )
    return schema


def _current(conn: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(conn, opts={"version_table_schema": _schema(conn)})
    return tuple(context.get_current_heads())


def _refuse_newer(found: tuple[str, ...]) -> None:
    unknown = [rev for rev in found if rev not in _known()]
    if unknown:
        raise CatalogUnavailable(
            f"this database was upgraded by a newer ShopLens (schema revision {', '.join(unknown)}); upgrade "
            "ShopLens to use it"
        )


def _created_by(conn: Connection) -> str | None:
    """For a store without alembic_version: the revision its tables are (None: no ShopLens tables)."""
    tables = _SHOPLENS_TABLES & set(inspect(conn).get_table_names(schema=_schema(conn)))
    if not tables:
        return None
    revision = _CREATE_ALL_STORES.get(frozenset(tables))
    if revision is None:
        missing = ", ".join(sorted(_SHOPLENS_TABLES - tables))
        raise CatalogUnavailable(
            f"the database has some ShopLens tables ({', '.join(sorted(tables))}) but not others ({missing}) and no "
            "schema revision, so it cannot be upgraded safely; restore it from a backup or use an empty database"
        )
    return revision


@contextmanager
def _locked_transaction(engine: Engine, timeout: float) -> Iterator[Connection]:
    """A connection in a transaction, holding this store's migration lock; committed on success."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn, conn.begin():
            _advisory_lock(conn, timeout)
            yield conn
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        with engine.connect() as conn, conn.begin():  # a private database: nobody to race with
            yield conn
        return
    lock = FileLock(f"{database}.migrate.lock", timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise CatalogUnavailable(_busy(timeout, f"lock file {lock.lock_file}")) from None
    try:
        sqlite = _sqlite_migration_engine(engine)
        try:
            with sqlite.connect() as conn, conn.begin():
                yield conn
        finally:
            sqlite.dispose()
    finally:
        lock.release()


def _advisory_lock(conn: Connection, timeout: float) -> None:
    """Transaction-scoped, one per schema (stores may share a database); released at commit."""
    conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(timeout * 1000)}ms"})
    try:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('shoplens-migrate:' || current_schema()))"))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise CatalogUnavailable(_busy(timeout, "PostgreSQL advisory lock")) from None
        raise


def _busy(timeout: float, what: str) -> str:
    return (
        f"another ShopLens process has been upgrading the database schema for over {timeout:.0f} s ({what}); "
        "try again later"
    )


def _sqlite_migration_engine(engine: Engine) -> Engine:
    """A one-off SQLite connection that makes a migration atomic and safe for table copies.

    pysqlite runs DDL outside any transaction, so a crash mid-upgrade would leave half a schema:
    here the driver's own transaction handling is off and BEGIN IMMEDIATE is issued instead.
    Foreign keys are off while migrating because a batch ALTER drops and recreates a table, which
    with them on would fire ON DELETE CASCADE on the rows pointing at it; `_check_foreign_keys`
    verifies them before commit.
    """
    sqlite = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(sqlite, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(sqlite, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return sqlite


def _check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL checks them on every statement
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = ", ".join(sorted({row[0] for row in broken}))
        raise CatalogUnavailable(
            f"the schema upgrade would leave rows in {tables} pointing at missing rows; nothing was changed"
        )

"""One ingest run at a time per store: a PostgreSQL advisory lock, or a file lock for SQLite.

A PostgreSQL advisory lock belongs to a database session, and sessions end when connections
drop: a network blip or a database restart mid-run frees the lock while the run goes on, and a
second run could start beside it. So the lock is not only taken once: the run asks `ensure()`
before each batch write, which finds a lost session and takes the lock again on a new one, or
stops the run (`LockLost`) if another run took the store meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from services.catalog.store import CatalogStore
from services.errors import ShopLensError

log = logging.getLogger(__name__)

RETAKE_WAIT = "10s"  # how long a re-take waits for this run's own lost session to let go of the lock
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's sqlstate when lock_timeout ends a wait


class LockBusy(ShopLensError):
    """Another ingest run holds the store."""

    code = "ingest_busy"
    http_status = 409


class LockLost(ShopLensError):
    """The database session that held this run's lock ended mid-run, and another run has taken the
    store since: this run must stop, or two runs would write at once."""

    code = "ingest_lock_lost"
    http_status = 409


class HeldLock:
    """The store's ingest lock while a run holds it. A file lock cannot be lost while its process
    lives, so `ensure` has nothing to do; the PostgreSQL lock overrides it."""

    def ensure(self) -> None:
        """Make sure this run still holds the store (call before each batch write)."""


@contextmanager
def ingest_lock(catalog: CatalogStore, home: Path, wait: float | None = 0.0) -> Iterator[HeldLock]:
    """Hold the store's ingest lock. `wait`: seconds to wait (None: forever, 0: do not wait)."""
    if catalog.dialect == "postgresql":
        lock = _AdvisoryLock(catalog)
        lock.acquire(wait)
        try:
            yield lock
        finally:
            lock.release()
        return
    home.mkdir(parents=True, exist_ok=True)
    path = home / "ingest.lock"
    file_lock = FileLock(str(path), timeout=-1 if wait is None else wait)
    try:
        file_lock.acquire()
    except Timeout:
        raise LockBusy(
            f"another ingest run is in progress on this store (lock file {path}); try again later or pass --wait"
        ) from None
    try:
        path.with_suffix(".pid").write_text(str(os.getpid()))
        yield HeldLock()
    finally:
        file_lock.release()


class _AdvisoryLock(HeldLock):
    """A session-level advisory lock, one per schema (several ShopLens stores may share a database),
    on a connection of its own that lives as long as the run."""

    def __init__(self, catalog: CatalogStore):
        assert catalog.lost_sessions is not None  # a PostgreSQL store notes the sessions it loses
        self.engine = catalog.engine
        self.lost_sessions = catalog.lost_sessions
        self._conn: Connection | None = None
        self._key: int | None = None
        self._checking = threading.Lock()  # a run's reader and embedding threads both ensure before writing

    def acquire(self, wait: float | None) -> None:
        deadline = None if wait is None else time.monotonic() + wait
        conn = self.engine.connect()
        try:
            key = int(conn.execute(text("SELECT hashtext('shoplens-ingest:' || current_schema())")).scalar_one())
            while not self._try(conn, key):
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockBusy(
                        "another ingest run is in progress on this database (PostgreSQL advisory lock); try again "
                        "later or pass --wait"
                    )
                time.sleep(0.5)
        except BaseException:
            conn.close()
            raise
        self._conn, self._key = conn, key

    def ensure(self) -> None:
        """Still held if the lock's session answers; if that session is gone, take the lock again.

        Raises OperationalError while the database cannot be reached (the caller's retries wait for
        it) and LockLost when another run holds the store now."""
        with self._checking:
            self._ensure()

    def _ensure(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                self._discard()
                log.warning("the database session holding the ingest lock was lost; taking the lock again")
        if self._conn is None:
            self._retake()
        assert self._conn is not None
        # a batch about to be written again must not wait on the row locks of this run's own lost
        # sessions (services/catalog/sessions.py): they are ended first
        self.lost_sessions.end(self._conn)

    def release(self) -> None:
        """Unlock, or nothing to do if the session is gone (the lock went with it): a run that
        finished must not fail here."""
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.commit()
        except DBAPIError as exc:
            log.debug("could not unlock the ingest lock (its session is gone with it): %s", exc)
            self._discard()
            return
        self._conn.close()
        self._conn = None

    # -- internals ---------------------------------------------------------------------------
    def _try(self, conn: Connection, key: int) -> bool:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        return got

    def _retake(self) -> None:
        assert self._key is not None
        conn = self.engine.connect()  # OperationalError while the database is away: retried by the caller
        try:
            if not self._try(conn, self._key) and not self._take_from_own_lost_session(conn, self._key):
                raise LockLost(
                    "the database connection dropped mid-run and another ingest run took the store meanwhile; this "
                    "run stopped so that two runs never write at once (the other run carries on with the pending work)"
                )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        log.warning("ingest lock taken again after a lost database session")

    def _take_from_own_lost_session(self, conn: Connection, key: int) -> bool:
        """The lock may still be held by this run's own lost session: the server has not noticed yet
        that the client went away (a silent network drop can hide that for hours). End the sessions
        this process lost (only those), then wait briefly for the lock they free."""
        if not self.lost_sessions.end(conn):  # none left on the server (maybe gone just now): one more try
            return self._try(conn, key)
        try:
            conn.execute(text(f"SET LOCAL lock_timeout = '{RETAKE_WAIT}'"))
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            conn.rollback()
            return False
        return True

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except DBAPIError:
                pass
        self._conn = None

"""One ingest run at a time per store: a PostgreSQL advisory lock, or a file lock for SQLite."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import text

from services.catalog.store import CatalogStore
from services.errors import ShopLensError


class LockBusy(ShopLensError):
    """Another ingest run holds the store."""

    code = "ingest_busy"
    http_status = 409


@contextmanager
def ingest_lock(catalog: CatalogStore, home: Path, wait: float | None = 0.0) -> Iterator[None]:
    """Hold the store's ingest lock. `wait`: seconds to wait (None: forever, 0: do not wait)."""
    if catalog.dialect == "postgresql":
        with _advisory_lock(catalog, wait):
            yield
        return
    home.mkdir(parents=True, exist_ok=True)
    path = home / "ingest.lock"
    lock = FileLock(str(path), timeout=-1 if wait is None else wait)
    try:
        lock.acquire()
    except Timeout:
        raise LockBusy(
            f"another ingest run is in progress on this store (lock file {path}); try again later or pass --wait"
        ) from None
    try:
        path.with_suffix(".pid").write_text(str(os.getpid()))
        yield
    finally:
        lock.release()


@contextmanager
def _advisory_lock(catalog: CatalogStore, wait: float | None) -> Iterator[None]:
    deadline = None if wait is None else time.monotonic() + wait
    with catalog.engine.connect() as conn:  # the lock lives as long as this session
        while True:
            # one lock per schema: several ShopLens stores may share a database
            key = conn.execute(text("SELECT hashtext('shoplens-ingest:' || current_schema())")).scalar()
            if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.commit()
                break
            conn.commit()
            if deadline is not None and time.monotonic() >= deadline:
                raise LockBusy(
                    "another ingest run is in progress on this database (PostgreSQL advisory lock); try again later "
                    "or pass --wait"
                )
            time.sleep(0.5)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()

"""PostgreSQL sessions this process lost, and ending them.

When the network path to PostgreSQL dies silently, the client's connections fail but the server
keeps their sessions, and a session that was inside a transaction keeps its row locks, for hours
if nothing tells the server. A retried write then waits on those locks for as long: an ingest run's
retry hung for good on the rows its own lost session had updated. So each connection's server
session is noted when it opens, noted again as lost when SQLAlchemy invalidates the connection,
and `end` ends the lost ones the server still has (the same pid and start time: never another's).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

Session = tuple[int, datetime]  # (backend pid, backend_start): one server session, never reused


class LostSessions:
    def __init__(self, engine: Engine) -> None:
        self._lost: set[Session] = set()
        self._lock = threading.Lock()
        event.listen(engine, "connect", self._opened)
        event.listen(engine, "invalidate", self._invalidated)

    def _opened(self, dbapi_conn: Any, record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            row = cur.fetchone()
        dbapi_conn.rollback()  # the query's transaction: the pool hands out connections idle
        if row is not None:
            record.info["session"] = (int(row[0]), row[1])

    def _invalidated(self, _dbapi_conn: Any, record: Any, _exc: BaseException | None) -> None:
        session = record.info.get("session")
        if session is not None:
            with self._lock:
                self._lost.add(session)

    def end(self, conn: Connection) -> int:
        """End the lost sessions the server still holds; how many it still held (ended, or not ours
        to end: their locks go when the server notices). Raises what the database raises when it
        cannot be reached (the caller's retries wait for it)."""
        with self._lock:
            lost, self._lost = self._lost, set()
        ended = held = 0
        for index, (pid, started) in enumerate(sorted(lost)):
            try:
                found = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid = :pid AND backend_start = :started"
                    ),
                    {"pid": pid, "started": started},
                ).scalar()
                conn.commit()
                ended += bool(found)
                held += found is not None
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    with self._lock:
                        self._lost |= set(sorted(lost)[index:])  # asked again next time
                    raise
                conn.rollback()  # not allowed to end it: its locks go when the server notices it is gone
                held += 1
                log.warning("could not end the lost database session %s: %s", pid, exc.orig)
        if ended:
            log.warning("ended %d database session(s) this process had lost, and the locks they held", ended)
        return held

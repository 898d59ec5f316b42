"""Small facts about the store, kept in the `store_meta` table (key -> JSON object).

Why a table rather than a file: every replica of the server and every CLI run against the same
database must see the same facts (e.g. which model `auto` resolved to, so that `shoplens stats`
can open the right vector collection without loading a model).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from services.catalog.models import StoreMeta, utcnow
from services.catalog.store import CatalogStore

_UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def get_meta(catalog: CatalogStore, key: str) -> dict[str, Any] | None:
    """The value stored under `key`, or None."""
    with catalog.session() as session:
        value = session.execute(select(StoreMeta.value).where(StoreMeta.key == key)).scalar_one_or_none()
    return value if isinstance(value, dict) else None


def set_meta(catalog: CatalogStore, key: str, value: dict[str, Any]) -> None:
    """Insert or replace `key` in one statement, so concurrent writers never hit a duplicate key."""
    with catalog.session() as session:
        insert = _UPSERTS.get(session.get_bind().dialect.name)
        if insert is None:  # another dialect: read-modify-write is the portable fallback
            session.merge(StoreMeta(key=key, value=value, updated_at=utcnow()))
            return
        statement: Any = insert(StoreMeta).values(key=key, value=value, updated_at=utcnow())  # dialect insert
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[StoreMeta.key],
                set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
            )
        )

"""The product metadata store: SQLAlchemy 2 over a SQLite file (default) or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Result, create_engine, delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.catalog.models import IngestRun, Product, ProductImage, utcnow
from services.catalog.sessions import LostSessions
from services.errors import Unavailable

MAX_STORED_ERRORS = 1000
ABANDONED = (
    "abandoned: the process stopped before recording how the run ended (killed, crashed, or cut off from the "
    "database); the next run resumes its pending work"
)


class CatalogUnavailable(Unavailable):
    """The database cannot be reached or opened."""

    code = "database_unavailable"
    prefix = "The product database is not reachable: "


@dataclass(frozen=True)
class Facets:
    categories: list[str]
    brands: list[str]
    min_price: float | None
    max_price: float | None


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in {"", "psycopg2"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})


class CatalogStore:
    def __init__(self, url: str):
        # imported here: migrate raises CatalogUnavailable, defined in this module
        from services.catalog.migrate import migrate

        self.url = url
        self.engine = make_engine(url)
        # a silent network drop leaves server sessions (and their row locks) behind: see sessions.py
        self.lost_sessions = LostSessions(self.engine) if self.engine.dialect.name == "postgresql" else None
        try:
            self.migration = migrate(self.engine)  # a cheap read when the schema is already at head
        except OperationalError as exc:
            raise CatalogUnavailable(f"cannot open the database ({_safe_url(url)}): {exc.orig}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None: none recorded)."""
        from services.catalog.migrate import current_revision

        return current_revision(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # -- products -------------------------------------------------------------------------
    def products_by_sku(self, session: Session, skus: Iterable[str]) -> dict[str, Product]:
        skus = list(skus)
        found: dict[str, Product] = {}
        for start in range(0, len(skus), 500):
            rows = session.scalars(select(Product).where(Product.sku.in_(skus[start : start + 500])))
            found.update({p.sku: p for p in rows})
        return found

    def get_product(self, sku: str) -> Product | None:
        with self.session() as session:
            return session.scalar(select(Product).where(Product.sku == sku))

    def get_products(self, skus: Iterable[str]) -> dict[str, Product]:
        with self.session() as session:
            return self.products_by_sku(session, skus)

    def all_skus(self) -> set[str]:
        with self.session() as session:
            return set(session.scalars(select(Product.sku)))

    def iter_products(self, batch_size: int = 200) -> Iterator[list[Product]]:
        """All products in id order, a batch at a time, each batch in its own session."""
        last_id = 0
        while True:
            with self.session() as session:
                batch = list(
                    session.scalars(select(Product).where(Product.id > last_id).order_by(Product.id).limit(batch_size))
                )
            if not batch:
                return
            last_id = batch[-1].id
            yield batch

    def delete_products(self, skus: Iterable[str]) -> int:
        skus = list(skus)
        with self.session() as session:
            deleted = 0
            for start in range(0, len(skus), 500):
                ids = list(session.scalars(select(Product.id).where(Product.sku.in_(skus[start : start + 500]))))
                if ids:
                    session.execute(delete(ProductImage).where(ProductImage.product_id.in_(ids)))
                    deleted += rowcount(session.execute(delete(Product).where(Product.id.in_(ids))))
            return deleted

    def referenced_media(self) -> set[str]:
        with self.session() as session:
            return set(session.scalars(select(ProductImage.media_path).distinct()))

    def counts(self) -> dict[str, int]:
        with self.session() as session:
            return {
                "products": session.scalar(select(func.count()).select_from(Product)) or 0,
                "images": session.scalar(select(func.count()).select_from(ProductImage)) or 0,
                "unsynced": session.scalar(
                    select(func.count()).select_from(Product).where(Product.synced_state.is_(None))
                )
                or 0,
            }

    def awaiting_images(self) -> list[str]:
        """SKUs with an image whose download failed: a later ingest run fetches it again."""
        with self.session() as session:
            return list(session.scalars(select(Product.sku).where(Product.image_failures > 0).order_by(Product.sku)))

    def synced_point_count(self) -> int:
        """How many points the vector store must hold at least: a text point per synced product plus
        one per image of it. Fewer in the store means points were lost (e.g. its folder deleted)."""
        with self.session() as session:
            synced = Product.synced_state.is_not(None)
            products = session.scalar(select(func.count()).select_from(Product).where(synced)) or 0
            images = session.scalar(select(func.count()).select_from(ProductImage).join(Product).where(synced)) or 0
            return products + images

    def facets(self, categories: Iterable[str] = ()) -> Facets:
        """Categories, brands and the price range; brands only of `categories` when given."""
        categories = list(categories)
        with self.session() as session:
            all_categories = session.scalars(
                select(Product.category).where(Product.category.is_not(None)).distinct().order_by(Product.category)
            )
            brands = select(Product.brand).where(Product.brand.is_not(None))
            if categories:
                brands = brands.where(Product.category.in_(categories))
            low, high = session.execute(select(func.min(Product.price), func.max(Product.price))).one()
            return Facets(
                [c for c in all_categories if c is not None],
                [b for b in session.scalars(brands.distinct().order_by(Product.brand)) if b is not None],
                _float(low),
                _float(high),
            )

    def list_products(
        self,
        offset: int = 0,
        limit: int = 24,
        categories: Iterable[str] = (),
        brands: Iterable[str] = (),
        in_stock_only: bool = False,
    ) -> tuple[list[Product], int]:
        """A page of products in catalog order, and how many match in all."""
        query = select(Product)
        categories, brands = list(categories), list(brands)
        if categories:
            query = query.where(Product.category.in_(categories))
        if brands:
            query = query.where(Product.brand.in_(brands))
        if in_stock_only:
            query = query.where(Product.in_stock.is_(True))
        with self.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            page = list(session.scalars(query.order_by(Product.id).offset(offset).limit(limit)))
            return page, total

    def media_path_of(self, sha256: str) -> str | None:
        """The media file of an image, by its content hash (how the API names images)."""
        with self.session() as session:
            return session.scalar(select(ProductImage.media_path).where(ProductImage.sha256 == sha256).limit(1))

    def get_run(self, run_id: int) -> IngestRun | None:
        with self.session() as session:
            return session.get(IngestRun, run_id)

    # -- ingest runs ----------------------------------------------------------------------
    def start_run(self, trigger: str, source: str, embedder: str) -> int:
        with self.session() as session:
            run = IngestRun(trigger=trigger, source=source, embedder=embedder, status="running")
            session.add(run)
            session.flush()
            return run.id

    def finish_run(
        self, run_id: int, status: str, counts: dict[str, int], errors: list[dict[str, Any]], message: str | None = None
    ) -> None:
        with self.session() as session:
            run = session.get(IngestRun, run_id)
            if run is None:
                return
            for key, value in counts.items():
                setattr(run, key, value)
            run.status = status
            run.error_count = len(errors)
            run.errors = errors[:MAX_STORED_ERRORS]
            run.message = message
            run.finished_at = utcnow()
            if status in ("succeeded", "partial"):
                self._settle_abandoned(session, run_id)

    @staticmethod
    def _settle_abandoned(session: Session, run_id: int) -> None:
        """Abandoned runs say their pending work is done once it is: a later run finished and no
        product waits for its vectors any more (until then they say the work is pending)."""
        pending = session.scalar(select(func.count()).select_from(Product).where(Product.synced_state.is_(None)))
        if pending:
            return
        session.execute(
            update(IngestRun)
            .where(IngestRun.id < run_id, IngestRun.status == "interrupted", IngestRun.message == ABANDONED)
            .values(message=ABANDONED.replace("the next run resumes", f"run {run_id} has since finished"))
            .execution_options(synchronize_session=False)
        )

    def record_failed_run(self, trigger: str, source: str, embedder: str, message: str) -> int:
        """A run that failed before it could start (its catalog could not be read): the history
        shows every attempt."""
        run_id = self.start_run(trigger, source, embedder)
        self.finish_run(run_id, "failed", {}, [], message)
        return run_id

    def abandon_running_runs(self) -> int:
        """Runs still marked running when the ingest lock is free were killed, crashed or lost the
        database before they could record their end: say so, and no more (their work is not done
        yet: `finish_run` says so once a later run has done it)."""
        with self.session() as session:
            result = session.execute(
                update(IngestRun)
                .where(IngestRun.status == "running")
                .values(
                    status="interrupted",
                    finished_at=utcnow(),
                    message=ABANDONED,
                )
            )
            return rowcount(result)

    def list_runs(self, limit: int = 20) -> list[IngestRun]:
        with self.session() as session:
            return list(session.scalars(select(IngestRun).order_by(IngestRun.id.desc()).limit(limit)))


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (a DML result is a CursorResult, which says so)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)

"""The batch pipeline: catalog records → images → SQL → vectors, with a run record and a report.

Batch k+1's images are read and decoded in a thread pool while batch k is embedded and written.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tqdm import tqdm

from ingest.faults import checkpoint
from ingest.images import PreparedProduct, local_image_stats, prepare_images
from ingest.locking import ingest_lock
from ingest.readers import Catalog
from ingest.records import REPORT_COLUMNS, ProductRecord, RowError
from ingest.sync import VectorSync, desired_state
from services.catalog.models import Product, ProductImage
from services.catalog.store import CatalogStore
from services.context import ShopLens
from services.embedders.base import Embedder
from services.files import spreadsheet_safe
from services.images import ImageLimits
from services.media import MediaStore
from services.vectors import VectorStore, VectorStoreUnavailable

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int], None]
TRANSIENT = (OperationalError, InterfaceError, VectorStoreUnavailable, ConnectionError, TimeoutError)


@dataclass
class IngestCounts:
    rows_total: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    pruned: int = 0
    failed: int = 0
    images_embedded: int = 0
    texts_embedded: int = 0
    indexed_vectors: int = 0  # vectors put in the search index at the end of the run
    index_seconds: float = 0.0


@dataclass
class Planned:
    record: ProductRecord
    fingerprint: str
    images: Future | PreparedProduct | None  # None: the row is unchanged


@dataclass
class IngestResult:
    run_id: int
    status: str  # succeeded | partial | failed | interrupted
    counts: IngestCounts
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    embedder: str = ""
    message: str | None = None

    def summary(self) -> str:
        c = self.counts
        rate = f", {c.images_embedded / self.seconds:.1f} images/s" if self.seconds and c.images_embedded else ""
        if c.indexed_vectors:
            rate += f"; search index built over {c.indexed_vectors} vectors in {c.index_seconds:.1f} s"
        return (
            f"run {self.run_id} {self.status}: {c.rows_total} rows — {c.new} new, {c.changed} changed, "
            f"{c.unchanged} unchanged, {c.pruned} pruned, {c.failed} failed; embedded {c.images_embedded} images "
            f"and {c.texts_embedded} texts in {self.seconds:.1f} s{rate}; {len(self.errors)} problem(s) reported"
        )

    def write_report(self, path: Path) -> None:
        """CSV (one line per problem) or JSON (summary plus problems), by the file's suffix."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [e.as_dict() for e in self.errors]
        if path.suffix.lower() == ".json":
            body = {
                "run_id": self.run_id,
                "status": self.status,
                "counts": asdict(self.counts),
                "seconds": round(self.seconds, 3),
                "embedder": self.embedder,
                "message": self.message,
                "errors": rows,
            }
            path.write_text(json.dumps(body, indent=2, ensure_ascii=False))
            return
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(REPORT_COLUMNS))
            writer.writeheader()
            writer.writerows(spreadsheet_safe(row) for row in rows)


class Ingestor:
    def __init__(
        self,
        catalog: CatalogStore,
        vectors: VectorStore,
        embedder: Embedder,
        media: MediaStore,
        limits: ImageLimits,
        home: Path,
        batch_size: int = 64,
        workers: int = 4,
        retries: int = 3,
    ):
        self.catalog, self.vectors, self.embedder, self.media, self.limits = catalog, vectors, embedder, media, limits
        self.home, self.batch_size, self.workers, self.retries = home, batch_size, workers, retries
        self.sync = VectorSync(catalog, vectors, embedder, media, limits)
        self.stop_event = threading.Event()  # set by signal handlers: finish the batch, then stop
        self.current: IngestResult | None = None  # the run in progress (or last run), for progress reporters

    # -- public -------------------------------------------------------------------------
    def ingest(
        self,
        catalog: Catalog,
        prune: bool = False,
        trigger: str = "cli",
        progress: ProgressFn | None = None,
        wait: float | None = 0.0,
    ) -> IngestResult:
        """One run under the store's ingest lock (`wait` seconds for it; None: as long as it takes)."""

        def body(result: IngestResult) -> None:
            result.counts.rows_total = catalog.rows_total
            result.counts.failed = _failed_rows(catalog.errors)
            result.errors.extend(catalog.errors)
            self._ingest_records(catalog, result, progress)
            if not self.stop_event.is_set():
                self.sync_pending(result)
            if prune and not self.stop_event.is_set():
                result.counts.pruned = self.prune(catalog.seen_skus)

        return self._run(trigger, catalog.source, body, wait)

    def reindex(self, progress: ProgressFn | None = None, wait: float | None = 0.0) -> IngestResult:
        """Rebuild every vector from SQL and the media folder (e.g. after an embedder change)."""

        def body(result: IngestResult) -> None:
            with self.catalog.session() as session:  # first: a kill after the drop must leave work pending
                session.execute(Product.__table__.update().values(synced_state=None))
            self.vectors.drop()
            checkpoint("reindex-after-drop")
            self.vectors.ensure_collection()
            self.sync_pending(result, progress)

        return self._run("reindex", "sql+media", body, wait)

    def _run(self, trigger: str, source: str, body: Callable[[IngestResult], None], wait: float | None) -> IngestResult:
        """Lock the store, record the run in SQL, run `body`, and record how it ended."""
        with ingest_lock(self.catalog, self.home, wait):
            self.catalog.abandon_running_runs()
            started = time.monotonic()
            describe = self.embedder.identity.describe()
            result = IngestResult(
                self.catalog.start_run(trigger, source, describe), "running", IngestCounts(), embedder=describe
            )
            self.current = result
            try:
                body(result)
                if not self.stop_event.is_set():
                    self._build_index(result)
            except Exception as exc:
                result.status, result.message = "failed", f"{exc.__class__.__name__}: {exc}"
                log.exception("%s run %s failed", trigger, result.run_id)
                raise
            finally:
                if result.status == "running":
                    result.status = (
                        "interrupted" if self.stop_event.is_set() else ("partial" if result.errors else "succeeded")
                    )
                result.seconds = time.monotonic() - started
                self._record(result.run_id, result)
            return result

    def _build_index(self, result: IngestResult) -> None:
        """Once per run, after the bulk of the writes: searches go on meanwhile."""
        build = self._retrying(self.vectors.build_index)
        if build is not None:
            result.counts.indexed_vectors, result.counts.index_seconds = build.vectors, round(build.seconds, 3)

    def _record(self, run_id: int, result: IngestResult) -> None:
        try:
            self.catalog.finish_run(
                run_id, result.status, asdict(result.counts), [e.as_dict() for e in result.errors], result.message
            )
        except (OperationalError, InterfaceError) as exc:  # the database itself is gone: say so, keep the first error
            log.error("could not record run %s as %s: %s", run_id, result.status, exc)

    def prune(self, keep_skus: set[str]) -> int:
        """Remove products not in `keep_skus` from SQL, then Qdrant, then unreferenced media."""
        doomed = sorted(self.catalog.all_skus() - keep_skus)
        if doomed:
            self.catalog.delete_products(doomed)
            checkpoint("prune-after-sql")
            self.vectors.delete_skus(doomed)
        self.delete_orphan_points()
        self.media.remove_unreferenced(self.catalog.referenced_media())
        return len(doomed)

    def delete_orphan_points(self) -> int:
        """Points whose product is gone from SQL (e.g. a run killed between the two deletes)."""
        known = self.catalog.all_skus()
        orphans = sorted({payload.get("sku") for _, payload in self.vectors.all_points()} - known - {None})
        self.vectors.delete_skus(orphans)
        return len(orphans)

    # -- stages ---------------------------------------------------------------------------
    def _ingest_records(self, catalog: Catalog, result: IngestResult, progress: ProgressFn | None) -> None:
        records = catalog.records
        batches = [records[i : i + self.batch_size] for i in range(0, len(records), self.batch_size)]
        bar = _progress_bar(len(records), "ingest")
        done = 0
        with (
            httpx.Client(follow_redirects=True) as http,
            ThreadPoolExecutor(1, thread_name_prefix="prepare") as reader,
            ThreadPoolExecutor(self.workers, thread_name_prefix="images") as pool,
        ):

            def submit(batch: Sequence[ProductRecord]) -> Future:
                return reader.submit(self._prepare, batch, catalog.base_dir, pool, http)

            pending: Future | None = submit(batches[0]) if batches else None
            for index in range(len(batches)):
                prepared = pending.result()
                pending = submit(batches[index + 1]) if index + 1 < len(batches) else None
                self._retrying(self._write_batch, prepared, result)
                done += len(batches[index])
                bar.update(len(batches[index]))
                if progress:
                    progress(done, len(records))
                if self.stop_event.is_set():
                    if pending is not None:
                        pending.cancel()
                    break
        bar.close()

    def _retrying(self, fn, *args):
        """Run a batch step again when SQL or Qdrant drops: every step is safe to repeat."""
        for attempt in Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
            before_sleep=lambda state: log.warning("batch failed (%s); retrying", state.outcome.exception()),
        ):
            with attempt:
                return fn(*args)

    def _prepare(
        self, batch: Sequence[ProductRecord], base_dir: Path | None, pool: ThreadPoolExecutor, http: httpx.Client
    ) -> list[Planned]:
        """Reader side: find what changed and read/decode the images of changed rows only."""
        previous = self.catalog.get_products(r.sku for r in batch)
        planned: list[Planned] = []
        for record in batch:
            prev = previous.get(record.sku)
            fingerprint = record.fingerprint(local_image_stats(record, base_dir))
            if prev is not None and prev.row_hash == fingerprint:
                planned.append(Planned(record, fingerprint, None))  # unchanged: no image reads
            else:
                job = pool.submit(prepare_images, record, prev, base_dir, self.media, self.limits, http)
                planned.append(Planned(record, fingerprint, job))
        for item in planned:
            if item.images is not None:
                item.images = item.images.result()
        return planned

    def _write_batch(self, planned: list[Planned], result: IngestResult) -> None:
        decoded = {}
        rows = {item.record.sku: item.record.row for item in planned}
        touched: list[str] = []
        with self.catalog.session() as session:
            current = self.catalog.products_by_sku(session, rows)
            for item in planned:
                product = current.get(item.record.sku)
                if item.images is None:  # fingerprint unchanged
                    result.counts.unchanged += 1
                    if product is not None and self.sync.needs_sync(product):
                        touched.append(item.record.sku)
                    continue
                result.errors.extend(item.images.errors)
                if product is None:
                    product = Product(sku=item.record.sku)
                    session.add(product)
                    result.counts.new += 1
                else:
                    result.counts.changed += 1
                self._apply(product, item)
                decoded.update({i.sha256: i.decoded for i in item.images.images if i.decoded is not None})
                touched.append(item.record.sku)
        checkpoint("after-sql")
        if touched:
            products = list(self.catalog.get_products(touched).values())
            self._add(result, self.sync.sync(products, decoded, rows))

    def _apply(self, product: Product, item: Planned) -> None:
        record, prepared = item.record, item.images
        product.title, product.description = record.title, record.description
        product.category, product.brand = record.category, record.brand
        product.price, product.currency, product.in_stock = record.price, record.currency, record.in_stock
        product.attributes = dict(record.attributes)
        product.row_hash = item.fingerprint
        existing = {img.sha256: img for img in product.images}
        wanted = []
        for position, info in enumerate(prepared.images):
            img = existing.get(info.sha256) or ProductImage(sha256=info.sha256)
            img.position, img.source, img.media_path = position, info.source[:2000], info.media_path
            img.width, img.height = info.width, info.height
            wanted.append(img)
        product.images = wanted
        if product.synced_state is not None and product.synced_state != desired_state(product, self.sync.identity_key):
            product.synced_state = None  # pending until its vectors are written

    def sync_pending(self, result: IngestResult, progress: ProgressFn | None = None) -> None:
        """Sync products left pending (by a killed run, a reindex, a failed embedding or reconcile)."""
        with self.catalog.session() as session:
            pending = list(
                session.scalars(select(Product.sku).where(Product.synced_state.is_(None)).order_by(Product.id))
            )
        bar = _progress_bar(len(pending), "vectors")
        for start in range(0, len(pending), self.batch_size):
            if self.stop_event.is_set():
                break
            chunk = pending[start : start + self.batch_size]
            self._add(
                result, self._retrying(lambda c: self.sync.sync(list(self.catalog.get_products(c).values())), chunk)
            )
            bar.update(len(chunk))
            if progress:
                progress(min(start + len(chunk), len(pending)), len(pending))
        bar.close()

    @staticmethod
    def _add(result: IngestResult, outcome) -> None:
        result.counts.images_embedded += outcome.images_embedded
        result.counts.texts_embedded += outcome.texts_embedded
        result.errors.extend(outcome.errors)


def _failed_rows(errors: Sequence[RowError]) -> int:
    return len({(e.row, e.sku) for e in errors})


def _progress_bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="row", disable=not sys.stderr.isatty() or total == 0, leave=False)


def ingestor_for(app: ShopLens) -> Ingestor:
    s = app.settings
    return Ingestor(
        app.catalog,
        app.vectors,
        app.embedder,
        app.media,
        app.limits,
        s.home,
        s.ingest_batch_size,
        s.ingest_workers,
        s.ingest_retries,
    )

"""The batch pipeline: catalog records → images → SQL → vectors, with a run record and a report.

While batch k is embedded and its vectors written, a reader thread takes batch k+1: its images
are downloaded (or asked for again), read, decoded and prepared for the embedder in a thread pool,
and its rows written to SQL, pending until their vectors land (_ingest_records).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tqdm import tqdm

from ingest.background import background_pool
from ingest.downloads import ImageDownloader
from ingest.faults import checkpoint
from ingest.images import ImageInfo, PreparedProduct, local_image_stats, prepare_images
from ingest.locking import HeldLock, ingest_lock
from ingest.readers import Catalog
from ingest.records import REPORT_COLUMNS, ProductRecord, RowError
from ingest.remote import RemoteImage, fetch_all, known_sources, save_sources, url_stats
from ingest.sync import VectorSync, desired_state, expected_points
from services.catalog.models import ImageSource, Product, ProductImage, utcnow
from services.catalog.store import CatalogStore, CatalogUnavailable
from services.context import ShopLens
from services.embedders.base import Embedder, EmbedError
from services.errors import ShopLensError
from services.fetch import is_url
from services.files import spreadsheet_safe
from services.images import ImageLimits
from services.media import MediaStore
from services.vectors import VectorStore, VectorStoreUnavailable

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int], None]
MAX_IMAGE_RETRY_WAIT = 24 * 3600.0  # a failed image is tried at least once a day
TRANSIENT = (OperationalError, InterfaceError, VectorStoreUnavailable, ConnectionError, TimeoutError)


@dataclass
class IngestCounts:
    rows_total: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    pruned: int = 0
    failed: int = 0
    unpublished: int = 0  # products the catalog marks draft/archived/unpublished: skipped, not loaded
    image_retries: int = 0  # unchanged rows whose failed image download was tried again
    image_retries_waiting: int = 0  # unchanged rows with a failed image, to be tried again by a later run
    resynced: int = 0  # synced products whose vectors were gone from the store, written again
    images_embedded: int = 0
    images_reused: int = 0  # photo vectors kept from the store of the text model this embedder replaced
    texts_embedded: int = 0
    images_downloaded: int = 0  # image bodies received over HTTP
    images_not_modified: int = 0  # image URLs whose server answered 304: nothing downloaded
    indexed_vectors: int = 0  # vectors put in the search index at the end of the run
    index_seconds: float = 0.0


@dataclass
class Planned:
    record: ProductRecord
    fingerprint: str
    images: Future | PreparedProduct | None  # None: the row is unchanged
    retry: bool = False  # an unchanged row read again because an image of it failed before
    refresh: bool = False  # an unchanged row read again to learn what its image URLs serve
    problems: list[RowError] = field(default_factory=list)  # an unchanged row's URL that could not be checked
    sources: list[ImageSource] = field(default_factory=list)  # image URLs to remember (ingest/remote.py)
    stored: Product | None = None  # an unchanged row's product as the plan read it


@dataclass
class Written:
    """A batch in SQL, handed from the reader thread to the one that embeds: its products, their
    new photos already prepared for the embedder (by sha256), each SKU's catalog row, and what
    writing it counted."""

    products: list[Product]
    prepared: dict[str, Any]
    rows: dict[str, int]
    counts: IngestCounts
    errors: list[RowError]


@dataclass
class IngestResult:
    run_id: int
    status: str  # succeeded | partial | failed | interrupted
    counts: IngestCounts
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    embedder: str = ""
    message: str | None = None  # why it failed, or how it was cut short
    recorded: bool = False  # its end is in the run history (not when the database was away)

    def summary(self) -> str:
        c = self.counts
        rate = f", {c.images_embedded / self.seconds:.1f} images/s" if self.seconds and c.images_embedded else ""
        if c.indexed_vectors:
            rate += f"; search index built over {c.indexed_vectors} vectors in {c.index_seconds:.1f} s"
        if c.image_retries or c.image_retries_waiting:
            rate += (
                f"; failed images fetched again for {c.image_retries} product(s), "
                f"{c.image_retries_waiting} waiting for a later run"
            )
        if c.images_downloaded or c.images_not_modified:
            rate += (
                f"; downloaded {c.images_downloaded} image(s), {c.images_not_modified} unchanged on their server "
                "(not downloaded)"
            )
        if c.images_reused:
            rate += f"; {c.images_reused} photo vector(s) reused from before the text model changed"
        if c.unpublished:
            rate += f"; {c.unpublished} unpublished product(s) skipped"
        if c.resynced:
            rate += f"; {c.resynced} product(s) whose vectors were missing from the vector store written again"
        why = f" — {self.message}" if self.status == "failed" and self.message else ""
        return (
            f"run {self.run_id} {self.status}: {c.rows_total} rows — {c.new} new, {c.changed} changed, "
            f"{c.unchanged} unchanged, {c.pruned} pruned, {c.failed} failed; embedded {c.images_embedded} images "
            f"and {c.texts_embedded} texts in {self.seconds:.1f} s{rate}; {len(self.errors)} problem(s) reported{why}"
        )

    def record(self, catalog: CatalogStore) -> bool:
        """Write how the run ended to the run history; False while the database is away (the run
        shows as running there until a later call succeeds or the next run marks it abandoned)."""
        try:
            catalog.finish_run(
                self.run_id, self.status, asdict(self.counts), [e.as_dict() for e in self.errors], self.message
            )
        except (OperationalError, InterfaceError) as exc:
            log.warning("could not record run %s as %s: %s", self.run_id, self.status, _describe(exc))
            return False
        self.recorded = True
        return True

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
        image_retry_backoff: float = 60.0,
        calibrate: Callable[[], object] | None = None,
        download_per_host: int = 4,
        download_retries: int = 2,
        photo_vectors_from: Callable[[], VectorStore | None] | None = None,
        background_nice: int = 10,
    ):
        self.catalog, self.vectors, self.embedder, self.media, self.limits = catalog, vectors, embedder, media, limits
        self.home, self.batch_size, self.workers, self.retries = home, batch_size, workers, retries
        self.image_retry_backoff = image_retry_backoff
        self.download_per_host, self.download_retries = download_per_host, download_retries
        self.background_nice = background_nice  # ingest/background.py
        self.calibrate = calibrate  # after each run: the search thresholds follow the catalog
        self.sync = VectorSync(catalog, vectors, embedder, media, limits, photo_vectors_from)
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
        force_prune: bool = False,
    ) -> IngestResult:
        """One run under the store's ingest lock (`wait` seconds for it; None: as long as it takes).

        Prune removes only products the file provably lacks: when a row could not be read and its
        SKU is unknown, it removes nothing and says so as the run's first problem (`prune_skipped`),
        unless `force_prune` (which implies `prune`): the merchant takes the guess."""

        def body(result: IngestResult) -> None:
            result.counts.rows_total = catalog.rows_total
            result.counts.failed = _failed_rows(catalog.errors)
            result.counts.unpublished = catalog.unpublished
            result.errors.extend(catalog.errors)
            result.counts.resynced = self.resync_lost_points()
            self._ingest_records(catalog, result, progress)
            if not self.stop_event.is_set():  # rows of this catalog were tried above: not twice
                self.sync_pending(result, skip={r.sku for r in catalog.records})
            if (prune or force_prune) and not self.stop_event.is_set():
                unsafe = None if force_prune else catalog.prune_problem()
                if unsafe is not None:
                    result.errors.insert(0, unsafe)
                else:
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

    _held: HeldLock | None = None  # the store's lock while a run holds it (checked before each batch step)

    def _run(self, trigger: str, source: str, body: Callable[[IngestResult], None], wait: float | None) -> IngestResult:
        """Lock the store, record the run in SQL, run `body`, and record how it ended.

        A batch step whose database connection dropped is repeated (`_retrying`, which also makes
        sure the lock survived the drop). If the database stays away, the run stops with one clear
        CatalogUnavailable instead of a driver error: its end is recorded if the database answers
        again in time, otherwise the next run marks it abandoned."""
        result: IngestResult | None = None
        try:
            with ingest_lock(self.catalog, self.home, wait) as lock:
                self._held = lock
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
                    result.status, result.message = "failed", _describe(exc)
                    log.warning("%s run %s failed: %s", trigger, result.run_id, result.message)
                    log.debug("%s run %s failed", trigger, result.run_id, exc_info=True)
                    raise
                finally:
                    if result.status == "running":
                        result.status, result.message = self._outcome(result)
                    result.seconds = time.monotonic() - started
                    result.record(self.catalog)  # False while the database is away: logged there
                return result
        except (OperationalError, InterfaceError) as exc:  # still failing after the retries: the database is away
            raise CatalogUnavailable(self._database_lost(exc, result)) from exc
        finally:
            self._held = None

    def _outcome(self, result: IngestResult) -> tuple[str, str | None]:
        """How a run that raised nothing ended. Every embedding failing is a failure, not a partial
        success: nothing the run wrote became searchable (the embedder is broken or refuses)."""
        if self.stop_event.is_set():
            return "interrupted", result.message
        c = result.counts
        refused = [e for e in result.errors if e.code == EmbedError.code]
        if refused and not (c.images_embedded or c.texts_embedded):
            products = len({e.sku for e in refused})
            return "failed", (
                f"every embedding failed ({products} product(s) left unsearchable; they are retried by the next run): "
                f"{refused[0].message}"
            )
        return ("partial" if result.errors else "succeeded"), result.message

    def _database_lost(self, exc: Exception, result: IngestResult | None) -> str:
        reason = _describe(exc)
        if result is None:
            return f"the database cannot be reached ({reason})"
        fate = (
            "it is recorded as failed"
            if result.recorded
            else "the next run will record it as abandoned (the database could not be told)"
        )
        lost = "connection was lost" if self.catalog.dialect == "postgresql" else "stopped answering"
        return (
            f"run {result.run_id} stopped: the database {lost} and did not come back after {self.retries} retries "
            f"({reason}); {fate}. Run the ingest again once the database is back: it resumes the pending work"
        )

    def _build_index(self, result: IngestResult) -> None:
        """Once per run, after the bulk of the writes. Searches go on while the index builds, so the
        "no good match" thresholds are calibrated meanwhile: the build is the vector engine's work,
        the calibration mostly the model's, and one after the other they were the run's tail."""
        with ThreadPoolExecutor(1, thread_name_prefix="index") as builder:
            building = builder.submit(self._retrying, self.vectors.build_index)
            if self.calibrate is not None:  # the thresholds follow the catalog
                try:
                    self.calibrate()
                except Exception:  # searches keep the previous thresholds; the run's work is done
                    log.warning("calibrating the search thresholds failed", exc_info=True)
            build = building.result()
        if build is not None:
            result.counts.indexed_vectors, result.counts.index_seconds = build.vectors, round(build.seconds, 3)

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

    def resync_lost_points(self) -> int:
        """Mark pending the synced products whose points the vector store no longer holds.

        Fingerprints in SQL say "synced", so an unchanged re-run would trust vectors that are gone
        (a deleted vector folder, a Qdrant collection dropped or restored from an old snapshot).
        The check is one count on each side; only when the store holds fewer points than SQL
        implies are the products' point ids looked up, a batch at a time.
        """
        if self.vectors.count() >= self.catalog.synced_point_count():
            return 0
        lost: list[int] = []
        for batch in self.catalog.iter_products():
            synced = [p for p in batch if p.synced_state is not None]
            wanted = {p.id: list(expected_points(p)) for p in synced}
            present = self.vectors.existing_ids([pid for ids in wanted.values() for pid in ids])
            lost.extend(product_id for product_id, ids in wanted.items() if not set(ids) <= present)
        with self.catalog.session() as session:
            for start in range(0, len(lost), 500):
                chunk = lost[start : start + 500]
                session.execute(Product.__table__.update().where(Product.id.in_(chunk)).values(synced_state=None))
        if lost:
            log.warning("the vector store lacks the points of %d synced product(s): re-syncing them", len(lost))
        return len(lost)

    # -- stages ---------------------------------------------------------------------------
    def _ingest_records(self, catalog: Catalog, result: IngestResult, progress: ProgressFn | None) -> None:
        """Three stages, each batch passing through them in turn: the reader thread plans a batch,
        downloads and decodes its images (the pool) and writes its rows to SQL; the calling thread
        embeds it; the writer thread writes its vectors and marks its rows synced. The reader works
        a batch ahead, at a lower CPU priority (ingest/background.py), so the model never waits for
        it and is never slowed by it; the writer writes a batch while the next one is embedded (one
        batch in flight, written in order), so the model does not wait for the stores either."""
        records = catalog.records
        batches = [records[i : i + self.batch_size] for i in range(0, len(records), self.batch_size)]
        bar = _progress_bar(len(records), "ingest")
        done = 0
        with (
            ImageDownloader(self.limits, self.workers, self.download_per_host, self.download_retries) as downloader,
            background_pool(1, "prepare", self.background_nice) as reader,
            background_pool(self.workers, "images", self.background_nice) as pool,
            ThreadPoolExecutor(1, thread_name_prefix="vectors") as writer,
        ):

            def read(batch: Sequence[ProductRecord]) -> Written:
                planned = self._prepare(batch, catalog.base_dir, pool, downloader)
                return self._retrying(self._write_rows, planned)

            pending: Future | None = reader.submit(read, batches[0]) if batches else None
            writing: Future | None = None
            for index, batch in enumerate(batches):
                if pending is None:  # stopped
                    break
                written = pending.result()
                ahead = index + 1 < len(batches) and not self.stop_event.is_set()
                pending = reader.submit(read, batches[index + 1]) if ahead else None
                _merge(result, written.counts, written.errors)
                embedded = None
                if written.products:
                    embedded = self._retrying(self.sync.embed, written.products, written.prepared, written.rows)
                if writing is not None:
                    self._add(result, writing.result())
                writing = writer.submit(self._retrying, self.sync.write, embedded) if embedded is not None else None
                done += len(batch)
                bar.update(len(batch))
                if progress:
                    progress(done, len(records))
                if self.stop_event.is_set() and pending is not None and pending.cancel():
                    pending = None  # not begun; a batch begun has rows in SQL: it is finished as well
            if writing is not None:
                self._add(result, writing.result())
        result.counts.images_downloaded = downloader.counts["bodies"]
        result.counts.images_not_modified = downloader.counts["not_modified"]
        bar.close()

    def _retrying(self, fn, *args):
        """Run a batch step again when SQL or Qdrant drops: every step is safe to repeat, and
        returns what it did rather than adding to the run's counts, so a repeat counts once.

        Before each attempt, make sure the run still holds the store: a dropped connection can take
        a PostgreSQL lock with it, and writing on without it would let a second run start beside
        this one. `ensure` takes it again, or raises LockLost (not retried) if another run has it."""
        for attempt in Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
            before_sleep=lambda state: log.warning("batch failed (%s); retrying", _describe(state.outcome.exception())),
        ):
            with attempt:
                if self._held is not None:
                    self._held.ensure()
                return fn(*args)

    def _prepare(
        self,
        batch: Sequence[ProductRecord],
        base_dir: Path | None,
        pool: ThreadPoolExecutor,
        downloader: ImageDownloader,
    ) -> list[Planned]:
        """Reader side: find what changed and read/decode the images of changed rows only.

        A row's image URLs are asked for again on every run (conditionally: see ingest/remote.py),
        because the image behind a URL may change while the row does not; the fingerprint holds
        the sha256 each URL serves. A failed image waiting for its retry is not asked for."""
        previous = self.catalog.get_products(r.sku for r in batch)
        urls = {r.sku: [ref for ref in dict.fromkeys(r.images) if is_url(ref)] for r in batch}
        known = known_sources(self.catalog, {u for refs in urls.values() for u in refs})
        remote = {u: RemoteImage(u, known.get(u)) for refs in urls.values() for u in refs}
        now, rows = utcnow(), []
        for record in batch:
            prev, local = previous.get(record.sku), local_image_stats(record, base_dir)
            as_before = record.fingerprint(local + url_stats(urls[record.sku], remote))  # if no image changed
            retry = prev is not None and _image_retry_due(prev, now)
            waiting = prev is not None and bool(prev.image_failures) and not retry and as_before == prev.row_hash
            rows.append((record, prev, local, as_before, retry, waiting))
        asked = {u for record, *_, waiting in rows for u in urls[record.sku] if not waiting or known.get(u)}
        fetch_all((remote[u] for u in asked), downloader, pool, self.media)

        planned: list[Planned] = []
        changed: list[tuple[ProductRecord, Product | None, tuple[str, ...], bool, bool]] = []
        for record, prev, local, as_before, retry, _ in rows:
            fingerprint = record.fingerprint(local + url_stats(urls[record.sku], remote))
            if prev is not None and prev.row_hash == fingerprint and not retry:  # unchanged: no image reads
                planned.append(_unchanged(record, fingerprint, [remote[u] for u in urls[record.sku]], prev))
                continue
            new_bodies = {remote[u].sha256_of_body for u in urls[record.sku]} - {None}
            same_row = prev is not None and as_before == prev.row_hash
            refresh = same_row and not retry and new_bodies <= {img.sha256 for img in prev.images}
            changed.append((record, prev, local, retry, refresh))
        late = {u for record, *_ in changed for u in urls[record.sku]} - asked  # a waiting image of a changed row
        fetch_all((remote[u] for u in late), downloader, pool, self.media)
        for record, prev, local, retry, refresh in changed:
            fingerprint = record.fingerprint(local + url_stats(urls[record.sku], remote))
            job = pool.submit(
                prepare_images, record, prev, base_dir, self.media, self.limits, remote, self.embedder.prepare_image
            )
            planned.append(Planned(record, fingerprint, job, retry, refresh))
        for item in planned:
            if isinstance(item.images, Future):
                item.images = item.images.result()
                item.sources = _sources([remote[u] for u in urls[item.record.sku]], item.images.images)
        order = {r.sku: i for i, r in enumerate(batch)}
        return sorted(planned, key=lambda p: order[p.record.sku])

    def _write_rows(self, planned: list[Planned]) -> Written:
        """A batch's rows to SQL, each product left pending until its vectors are written."""
        counts, errors, prepared = IngestCounts(), [], {}
        rows = {item.record.sku: item.record.row for item in planned}
        touched: list[str] = []
        with self.catalog.session() as session:
            # Only rows that changed are loaded again, to be written: an unchanged row's product is
            # the one its plan read (this run holds the store, so nothing else wrote it since). On
            # a scheduled re-run that is every row: the second load was 8% of its profile.
            current = self.catalog.products_by_sku(session, [i.record.sku for i in planned if i.images is not None])
            save_sources(session, [row for item in planned for row in item.sources])
            for item in planned:
                if item.images is None:  # fingerprint unchanged
                    product = item.stored
                    errors.extend(item.problems)
                    counts.unchanged += 1
                    if product is not None and product.image_failures:
                        counts.image_retries_waiting += 1
                    if product is not None and self.sync.needs_sync(product):
                        touched.append(item.record.sku)
                    continue
                errors.extend(item.images.errors)
                product = current.get(item.record.sku)
                if product is None:
                    product = Product(sku=item.record.sku)
                    session.add(product)
                    counts.new += 1
                elif item.retry or item.refresh:
                    counts.unchanged += 1
                    counts.image_retries += int(item.retry)
                else:
                    counts.changed += 1
                self._apply(product, item)
                prepared.update({i.sha256: i.prepared for i in item.images.images if i.prepared is not None})
                touched.append(item.record.sku)
        checkpoint("after-sql")
        products = list(self.catalog.get_products(touched).values()) if touched else []
        return Written(products, prepared, rows, counts, errors)

    def _apply(self, product: Product, item: Planned) -> None:
        record, prepared = item.record, item.images
        product.title, product.description = record.title, record.description
        product.category, product.brand = record.category, record.brand
        product.price, product.currency, product.in_stock = record.price, record.currency, record.in_stock
        product.attributes = dict(record.attributes)
        product.row_hash = item.fingerprint
        if prepared.errors:  # fetched again by later runs, each waiting twice as long, until it lands
            product.image_failures = (product.image_failures or 0) + 1
            wait = min(self.image_retry_backoff * 2 ** (product.image_failures - 1), MAX_IMAGE_RETRY_WAIT)
            product.retry_after = utcnow() + timedelta(seconds=wait)
        else:
            product.image_failures, product.retry_after = 0, None
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

    def sync_pending(
        self, result: IngestResult, progress: ProgressFn | None = None, skip: Collection[str] = ()
    ) -> None:
        """Sync products left pending (by a killed run, a reindex, a failed embedding or reconcile);
        `skip`: products this run has tried already (their problems are reported once)."""
        with self.catalog.session() as session:
            pending = [
                sku
                for sku in session.scalars(
                    select(Product.sku).where(Product.synced_state.is_(None)).order_by(Product.id)
                )
                if sku not in skip
            ]
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
        result.counts.images_reused += outcome.images_reused
        result.counts.texts_embedded += outcome.texts_embedded
        result.errors.extend(outcome.errors)


def _merge(result: IngestResult, counts: IngestCounts, errors: Sequence[RowError]) -> None:
    for name, value in asdict(counts).items():
        setattr(result.counts, name, getattr(result.counts, name) + value)
    result.errors.extend(errors)


def _unchanged(record: ProductRecord, fingerprint: str, images: list[RemoteImage], product: Product) -> Planned:
    """An unchanged row: a URL that could not be checked is reported, its stored copy kept."""
    kept = [
        RowError(record.row, "image", f"{r.error} (kept the previously stored copy)", record.sku, r.error.code)
        for r in images
        if r.error is not None
    ]
    return Planned(record, fingerprint, None, problems=kept, sources=_sources(images, product.images), stored=product)


def _sources(images: list[RemoteImage], stored: Sequence[ImageInfo | ProductImage]) -> list[ImageSource]:
    """The image_sources rows to write for what the URLs served (matched to stored copies by sha256)."""
    by_sha = {img.sha256: img for img in stored}
    rows = []
    for image in images:
        copy = by_sha.get(image.sha256 or "")
        row = image.source_row(copy.media_path, copy.width, copy.height) if copy is not None else None
        if row is not None:
            rows.append(row)
    return rows


def _image_retry_due(product: Product, now: datetime) -> bool:
    if not product.image_failures:
        return False
    due = product.retry_after
    if due is not None and due.tzinfo is None:  # SQLite keeps no time zone: the value was written as UTC
        due = due.replace(tzinfo=UTC)
    return due is None or due <= now


def _describe(exc: BaseException | None) -> str:
    """An error on one line, without the SQL statement and parameters a driver error carries."""
    if isinstance(exc, ShopLensError):
        return exc.message
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        lines = str(exc.orig).strip().splitlines()
        return f"{exc.orig.__class__.__name__}: {lines[0] if lines else exc.orig.__class__.__name__}"
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"


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
        s.image_retry_backoff,
        app.search.calibrate,
        s.download_per_host,
        s.download_retries,
        app.photo_vectors_from,
        s.ingest_background_nice,
    )

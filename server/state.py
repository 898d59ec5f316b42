"""What the server process owns: the stores, the models, the job queue and the schedule.

Routes call these methods and nothing else; everything here is plain Python, so the same
operations run the same way in tests, in the API and behind the command line's client.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import secrets
import socket
import threading
from dataclasses import asdict
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from PIL import Image

from ingest.locking import ingest_lock
from ingest.reconcile import collect_stats, reconcile_app
from server import schemas, views
from server.admin import UploadPlan, delete_product, save_upload
from server.auth import LoginThrottle
from server.discovery import ServerInfo
from server.jobs import JobQueue, JobRequest
from server.schedule import ServerSchedule
from services.audit import Auditor
from services.context import ShopLens
from services.errors import NotFound, Throttled, TooLarge, Unauthorized, UsageError
from services.fetch import is_url
from services.images import (
    MODEL_SHORT_SIDE,
    PHOTO_FORMATS,
    ImageError,
    decode_for_model,
    format_labels,
    probe_format,
    square_thumbnail,
)
from services.search import SearchFilters, SearchRequest
from services.vectors import TEXT

log = logging.getLogger(__name__)
THUMB_SIZES = (96, 240, 480, 720, 1024)


def _version() -> str:
    try:
        return version("shoplens")
    except PackageNotFoundError:
        return "0+unknown"


def run_search(app: ShopLens, query: schemas.SearchQuery, photo: bytes | None) -> schemas.SearchResult:
    """One search as the API answers it (the CLI without a server runs the same): the shopper's
    photo checked and decoded at the scale the model needs, then `SearchService.search`."""
    image = _photo(app, photo) if photo is not None else None
    filters = _search_filters(query)
    request = SearchRequest(
        image, query.text, query.weight, filters, query.top_k, query.offset, query.min_score, query.facets
    )
    return views.search_result(app.search.search(request))


def _search_filters(filters: schemas.Filters) -> SearchFilters:
    return SearchFilters(
        tuple(filters.category), tuple(filters.brand), filters.min_price, filters.max_price, filters.in_stock
    )


def _photo(app: ShopLens, data: bytes) -> Image.Image:
    limits = app.limits
    if len(data) > limits.max_bytes:
        raise TooLarge(f"the photo is {len(data) / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB")
    fmt, _, _ = probe_format(data, limits, short_side=MODEL_SHORT_SIDE)
    if fmt not in PHOTO_FORMATS:
        raise ImageError(f"{fmt} photos are not supported here (use {format_labels(photo=True)})")
    return decode_for_model(data, limits)[0]


class ServerState:
    def __init__(self, app: ShopLens, url: str, schedule: ServerSchedule | None = None):
        self.app = app
        self.settings = app.settings
        self.url = url
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.token = secrets.token_urlsafe(32)  # same-machine clients (the CLI) read it from server.json
        self.jobs = JobQueue(app, self.server_id)
        self.schedule = schedule
        self.throttle = LoginThrottle(lockout_seconds=60.0)  # per client: slows guessing, never a long lock-out
        self.version = _version()
        self.auditor = Auditor(app)  # the last catalog audit, while the catalog is unchanged
        self._warm = threading.Thread(target=self._warm_up, name="shoplens-warm-up", daemon=True)
        # content-addressed, so never stale; lru_cache is safe across the request threads
        self._thumbnail = lru_cache(maxsize=2048)(
            lambda relative, size: square_thumbnail(self.app.media.read(relative), size, self.app.limits)
        )

    # -- life ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the stores now (a store in use elsewhere fails the start with its own message)."""
        self.app.catalog  # noqa: B018 - runs schema migrations
        self.app.vectors  # noqa: B018
        self.jobs.start()
        if self.schedule is not None:
            self.schedule.start(self.jobs)
        self._warm.start()
        ServerInfo(self.url, os.getpid(), self.token, self.server_id).write(self.settings.server_file)

    def close(self) -> None:
        if self.schedule is not None:
            self.schedule.stop()
        self.jobs.stop()
        info = ServerInfo.read(self.settings.server_file)
        if info is not None and info.server_id == self.server_id:
            self.settings.server_file.unlink(missing_ok=True)
        self.app.close()

    def _warm_up(self) -> None:
        """Load the model before the first shopper waits for it."""
        try:
            embedder = self.app.embedder
            embedder.embed_image(Image.new("RGB", (64, 64), (255, 255, 255)))
            embedder.embed_text("warm up", query=True)
        except Exception:
            log.exception("the search model could not be loaded; searches will say why")

    @property
    def model_loaded(self) -> bool:
        return "embedder" in self.app.__dict__ and not self._warm.is_alive()

    # -- admin credential -----------------------------------------------------------------------
    def check_admin(self, authorization: str | None, client: str) -> None:
        """`client` names who guesses (address, plus the page session behind a shared address)."""
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized(
                "this needs the admin credential: send the header 'Authorization: Bearer <SHOPLENS_ADMIN_PASSWORD>'"
            )
        credential = credential.strip()
        if secrets.compare_digest(credential.encode(), self.token.encode()):
            return
        secret = self.settings.admin_password.get_secret_value() if self.settings.admin_password else ""
        result = self.throttle.attempt(secret, credential, client)
        if result.ok:
            return
        message = result.message.replace("passwords", "admin credentials").replace("password", "admin credential")
        if result.blocked:
            raise Throttled(message, result.wait_seconds)
        raise Unauthorized(message)

    # -- shoppers -------------------------------------------------------------------------------
    def health(self) -> schemas.Health:
        counts = self.app.catalog.counts()
        identity = self.app.identity
        loaded = self.model_loaded
        return schemas.Health(
            status="ok" if loaded else "starting",
            ready=True,
            model_loaded=loaded,
            embedder=identity.describe(),
            fallback_reason=self.app.embedder.fallback_reason if loaded else None,
            collection=self.app.vectors.collection,
            counts=schemas.Counts(**counts),
            vectors=self.app.vectors.count(),
            jobs_waiting=self.jobs.waiting(),
            schedule=self.schedule.describe() if self.schedule else None,
            version=self.version,
            server_id=self.server_id,
        )

    def search(self, query: schemas.SearchQuery, photo: bytes | None) -> schemas.SearchResult:
        return run_search(self.app, query, photo)

    def product(self, sku: str) -> schemas.Product:
        product = self.app.catalog.get_product(sku)
        if product is None:
            raise NotFound(f"no product with SKU {sku!r}")
        return views.product(product)

    def products(self, offset: int, limit: int, filters: schemas.Filters) -> schemas.ProductPage:
        page, total = self.app.catalog.list_products(offset, limit, filters.category, filters.brand, filters.in_stock)
        return schemas.ProductPage(products=[views.product(p) for p in page], total=total, offset=offset, limit=limit)

    def similar(self, sku: str, top_k: int, filters: schemas.Filters) -> schemas.SearchResult:
        wanted = SearchFilters(
            tuple(filters.category), tuple(filters.brand), filters.min_price, filters.max_price, filters.in_stock
        )
        return views.search_result(self.app.search.more_like_this(sku, top_k, wanted))

    def facets(self, filters: schemas.Filters) -> schemas.Facets:
        f = self.app.catalog.facets(filters.category)
        counts = self.app.vectors.facets(_search_filters(filters).for_kind(TEXT))
        return schemas.Facets(
            categories=f.categories,
            brands=f.brands,
            min_price=f.min_price,
            max_price=f.max_price,
            category_counts=[schemas.FacetCount(value=v, count=c) for v, c in counts["category"]],
            brand_counts=[schemas.FacetCount(value=v, count=c) for v, c in counts["brand"]],
        )

    def image(self, sha256: str, size: int | None) -> tuple[bytes, str]:
        """The photo's bytes (or a square thumbnail) and its media type."""
        relative = self.app.catalog.media_path_of(sha256)
        if relative is None or not self.app.media.exists(relative):
            raise NotFound("no such image")
        if size is None:  # stored copies are named <sha256><suffix of their format>
            media_type = mimetypes.guess_type(relative)[0] or "application/octet-stream"
            return self.app.media.read(relative), media_type
        if size not in THUMB_SIZES:
            raise UsageError(f"size must be one of {', '.join(map(str, THUMB_SIZES))}")
        return self._thumbnail(relative, size), "image/jpeg"

    # -- admin ----------------------------------------------------------------------------------
    def stats(self) -> schemas.Stats:
        return schemas.Stats.model_validate(collect_stats(self.app))

    def audit(self, fresh: bool = False) -> schemas.Audit:
        return schemas.Audit.model_validate(self.auditor.report(fresh).as_dict())

    def accept_audit(self, body: schemas.AuditAccept) -> schemas.AuditAccepted:
        return schemas.AuditAccepted.model_validate(self.auditor.accept(body.skus, body.min_confidence).as_dict())

    def preview(self, plan: UploadPlan) -> schemas.UploadPreview:
        sample = [
            {
                "sku": r.sku,
                "title": r.title,
                "category": r.category,
                "brand": r.brand,
                "price": None if r.price is None else float(r.price),
                "images": len(r.images),
            }
            for r in plan.catalog.records[:20]
        ]
        return schemas.UploadPreview(
            rows_total=plan.rows_total,
            rows_ok=plan.rows_ok,
            rows_with_errors=plan.rows_with_errors,
            images_in_upload=len(plan.bundle.entries) if plan.bundle else 0,
            skipped_files=list(plan.bundle.skipped) if plan.bundle else [],
            problems=plan.problems()[:1000],
            sample=sample,
        )

    def ingest_upload(self, plan: UploadPlan, prune: bool, trigger: str, force_prune: bool = False) -> schemas.Job:
        folder = save_upload(self.app, plan)
        params = {"upload": True, "prune": prune, "force_prune": force_prune, "folder": str(folder)}
        request = JobRequest("ingest", trigger, plan.catalog.source, params)
        return self.jobs.submit(request, plan.catalog)

    def ingest_source(self, body: schemas.IngestUrl, trigger: str) -> schemas.Job:
        if body.url is not None:
            if not is_url(body.url):
                raise UsageError("url must be an http(s) URL")
            source, params = body.url, {"url": body.url}
        else:
            path = Path(str(body.path)).expanduser()
            if not path.is_file():
                raise NotFound(f"catalog file not found on the server: {body.path}")
            source, params = str(path.resolve()), {"path": str(path.resolve())}
        job_params: dict[str, Any] = {**params, "prune": body.prune, "force_prune": body.force_prune}
        return self.jobs.submit(JobRequest("ingest", trigger, source, job_params))

    def reindex(self, trigger: str) -> schemas.Job:
        return self.jobs.submit(JobRequest("reindex", trigger, "sql+media", {}))

    def reconcile(self, dry_run: bool) -> dict[str, Any]:
        """Drift between SQL and the vectors; repaired unless `dry_run` (an ingest must not be running)."""
        with ingest_lock(self.app.catalog, self.settings.home, wait=0):
            report = reconcile_app(self.app, dry_run=dry_run)
        return {**asdict(report), "clean": report.clean, "summary": report.summary()}

    def job(self, job_id: str) -> schemas.Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def runs(self, limit: int) -> list[schemas.Run]:
        return [views.run(r) for r in self.app.catalog.list_runs(limit)]

    def run_report(self, run_id: int) -> list[dict[str, Any]]:
        run = self.app.catalog.get_run(run_id)
        if run is None:
            raise NotFound(f"no ingest run {run_id}")
        return list(run.errors or [])

    def delete(self, sku: str) -> None:
        if not delete_product(self.app, sku):
            raise NotFound(f"no product with SKU {sku!r}")

"""What the admin page does, as plain functions: log in (throttled), preview and ingest an upload,
delete a product, list ingest runs. The Streamlit page only shows these; tests call them directly.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ingest.bundles import (
    BundleLimits,
    BundlePlan,
    best_prefix,
    extract_zip,
    inspect_files,
    inspect_zip,
    save_files,
    upload_folder,
)
from ingest.locking import ingest_lock
from ingest.pipeline import IngestResult, ProgressFn, ingestor_for
from ingest.readers import (
    CSV_SUFFIXES,
    JSONL_SUFFIXES,
    Catalog,
    CatalogError,
    parse_catalog,
)
from ingest.records import RowError
from services.context import ShopLens
from services.images import is_url

CATALOG_TYPES = sorted(s.lstrip(".") for s in CSV_SUFFIXES | JSONL_SUFFIXES)
MAX_UPLOAD_CATALOG_BYTES = 64 * 1024 * 1024


# -- login ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str
    wait_seconds: float = 0.0


@dataclass
class _Strikes:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Wrong admin passwords cost time: per browser session AND for the whole process.

    Each wrong guess blocks further guesses for 1, 2, 4, 8 s …; the fifth wrong guess in a row
    locks for `lockout_seconds`. The process-wide counter stops an attacker who opens a new
    session per guess. A correct password resets both counters; an hour without failures too.
    """

    GLOBAL = "\x00process"

    def __init__(self, max_failures: int = 5, base_delay: float = 1.0, lockout_seconds: float = 300.0, forget_after: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        self.max_failures, self.base_delay, self.lockout_seconds = max_failures, base_delay, lockout_seconds
        self.forget_after, self.clock = forget_after, clock
        self._strikes: dict[str, _Strikes] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, session: str) -> float:
        with self._lock:
            return self._wait(session, self.clock())

    def attempt(self, secret: str | None, guess: str, session: str) -> LoginResult:
        if not secret:
            return LoginResult(False, "The admin page is disabled: set SHOPLENS_ADMIN_PASSWORD to enable it.")
        now = self.clock()
        with self._lock:
            wait = self._wait(session, now)
            if wait > 0:
                return LoginResult(False, f"Too many wrong passwords. Try again in {math.ceil(wait)} s.", wait)
        ok = hmac.compare_digest(guess.encode("utf-8"), secret.encode("utf-8"))
        with self._lock:
            if ok:
                self._strikes.pop(session, None)
                self._strikes.pop(self.GLOBAL, None)
                return LoginResult(True, "Welcome.")
            delays = [self._strike(key, now) for key in (session, self.GLOBAL)]
            self._prune(now)
        delay = max(delays)
        if delay >= self.lockout_seconds:
            return LoginResult(False, f"Wrong password. Too many wrong passwords: locked for {math.ceil(delay / 60)} min.", delay)
        return LoginResult(False, f"Wrong password. Wait {math.ceil(delay)} s before the next try.", delay)

    def reset(self) -> None:
        with self._lock:
            self._strikes.clear()

    def _wait(self, session: str, now: float) -> float:
        waits = [s.blocked_until - now for key in (session, self.GLOBAL) if (s := self._strikes.get(key))]
        return max([0.0, *waits])

    def _strike(self, key: str, now: float) -> float:
        strikes = self._strikes.setdefault(key, _Strikes())
        if strikes.failures and now - strikes.last_failure > self.forget_after:
            strikes.failures = 0
        strikes.failures += 1
        strikes.last_failure = now
        if strikes.failures >= self.max_failures:
            delay = self.lockout_seconds
        else:
            delay = min(self.base_delay * 2 ** (strikes.failures - 1), self.lockout_seconds)
        strikes.blocked_until = max(strikes.blocked_until, now + delay)
        return delay

    def _prune(self, now: float) -> None:
        if len(self._strikes) > 10_000:
            stale = [k for k, s in self._strikes.items() if k != self.GLOBAL and now - s.last_failure > self.forget_after]
            for key in stale:
                del self._strikes[key]


# -- uploads -------------------------------------------------------------------------------------
@dataclass
class UploadPlan:
    """A checked upload: the parsed catalog plus its images, nothing written yet."""

    catalog_name: str
    catalog_bytes: bytes
    catalog: Catalog
    bundle: BundlePlan | None = None
    zip_bytes: bytes | None = None
    files: Sequence[tuple[str, bytes]] = ()
    prefix: str = ""  # where the catalog's image names resolve inside the bundle
    warnings: list[RowError] = field(default_factory=list)  # images that will be missing

    @property
    def rows_total(self) -> int:
        return self.catalog.rows_total

    @property
    def rows_ok(self) -> int:
        return len(self.catalog.records)

    @property
    def rows_with_errors(self) -> int:
        return len({(e.row, e.sku) for e in self.catalog.errors})

    def problems(self) -> list[dict[str, Any]]:
        """Row errors (the row is skipped) and warnings (the row loads without that image)."""
        rows = [{"problem": "row skipped", **e.as_dict()} for e in self.catalog.errors]
        rows += [{"problem": "image missing", **e.as_dict()} for e in self.warnings]
        return sorted(rows, key=lambda r: (r["row"], r["problem"]))


def catalog_format(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    raise CatalogError(f"unsupported catalog format {suffix or '(no extension)'}: upload a .csv or .jsonl file")


def plan_upload(
    catalog_name: str,
    catalog_bytes: bytes,
    zip_bytes: bytes | None = None,
    files: Sequence[tuple[str, bytes]] = (),
    limits: BundleLimits | None = None,
) -> UploadPlan:
    """Parse and check an upload without writing anything; raises CatalogError or BundleError."""
    if len(catalog_bytes) > MAX_UPLOAD_CATALOG_BYTES:
        raise CatalogError(f"the catalog file is larger than {MAX_UPLOAD_CATALOG_BYTES // 2**20} MiB")
    catalog = parse_catalog(catalog_bytes, name=catalog_name, base_dir=None, fmt=catalog_format(catalog_name))
    bundle = None
    if zip_bytes is not None:
        bundle = inspect_zip(zip_bytes, limits)
    elif files:
        bundle = inspect_files(files, limits)
    available = bundle.paths if bundle else set()
    local_refs = [ref for r in catalog.records for ref in r.images if not is_url(ref)]
    prefix = best_prefix(available, local_refs) if bundle else ""
    plan = UploadPlan(catalog_name, catalog_bytes, catalog, bundle, zip_bytes, list(files), prefix)
    records = []
    for record in catalog.records:
        keep = []
        for ref in record.images:
            if is_url(ref):
                keep.append(ref)
                continue
            parts = ref.replace("\\", "/").split("/")
            if ref.startswith(("/", "\\", "~")) or ".." in parts or (len(ref) > 1 and ref[1] == ":"):
                catalog.errors.append(RowError(record.row, "image", f"{ref!r} is outside the upload: name a file in the uploaded images or an http(s) URL; image ignored", record.sku))
                continue
            keep.append(ref)
            if prefix + "/".join(p for p in parts if p not in ("", ".")) not in available:
                plan.warnings.append(RowError(record.row, "image", f"{ref!r} is not among the uploaded images", record.sku))
        records.append(record if len(keep) == len(record.images) else record.model_copy(update={"images": tuple(keep)}))
    catalog.records = records
    return plan


def ingest_upload(app: ShopLens, plan: UploadPlan, prune: bool = False, progress: ProgressFn | None = None) -> tuple[IngestResult, Path]:
    """Write the upload's images under `<home>/uploads/<timestamp>/`, ingest, write the report."""
    home = app.settings.home
    folder = upload_folder(home)
    images = folder / "images"
    if plan.zip_bytes is not None:
        extract_zip(plan.zip_bytes, images, BundleLimits.from_settings(app.settings))
    elif plan.files:
        save_files(plan.files, images, BundleLimits.from_settings(app.settings))
    else:
        images.mkdir(parents=True)
    name = PurePosixPath(plan.catalog_name.replace("\\", "/")).name or "catalog"
    (folder / f"catalog-{name}").write_bytes(plan.catalog_bytes)
    plan.catalog.base_dir = images / plan.prefix if plan.prefix else images
    plan.catalog.source = f"upload {name} ({folder.name})"
    result = ingestor_for(app).ingest(plan.catalog, prune=prune, trigger="admin", progress=progress)
    report = home / "reports" / f"run-{result.run_id}.csv"
    result.write_report(report)
    return result, report


# -- products and runs ---------------------------------------------------------------------------
def delete_product(app: ShopLens, sku: str) -> bool:
    """Remove a product from SQL, then its vectors, then media no product uses; False if unknown.

    Holds the ingest lock so a run in progress cannot write the product back half-deleted.
    """
    sku = sku.strip()
    with ingest_lock(app.catalog, app.settings.home, wait=10):
        if not sku or app.catalog.get_product(sku) is None:
            return False
        app.catalog.delete_products([sku])
        app.vectors.delete_skus([sku])
        app.media.remove_unreferenced(app.catalog.referenced_media())
    return True


def run_rows(app: ShopLens, limit: int = 50) -> list[dict[str, Any]]:
    """The latest ingest runs as table rows, newest first."""
    rows = []
    for run in app.catalog.list_runs(limit):
        seconds = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else None
        rows.append({
            "run": run.id, "started": run.started_at, "trigger": run.trigger, "status": run.status,
            "source": run.source, "rows": run.rows_total, "new": run.new, "changed": run.changed,
            "unchanged": run.unchanged, "pruned": run.pruned, "failed": run.failed,
            "problems": run.error_count, "seconds": None if seconds is None else round(seconds, 1),
            "embedder": run.embedder,
        })
    return rows

"""What an admin does, as plain functions: preview and ingest an upload, delete a product. The
API's admin routes call these (ingest runs are listed through `server.views.run`); tests call
them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ingest.bundles import (
    BundleError,
    BundleLimits,
    BundlePlan,
    best_prefix,
    extract_zip,
    inspect_files,
    inspect_zip,
    remove_upload,
    safe_relative_path,
    save_files,
    upload_folder,
)
from ingest.locking import ingest_lock
from ingest.pipeline import IngestResult, ProgressFn, ingestor_for
from ingest.readers import FORMATS_ADVICE, Catalog, CatalogError, catalog_format, parse_catalog
from ingest.records import RowError
from services.context import ShopLens
from services.fetch import is_url

MAX_UPLOAD_CATALOG_BYTES = 64 * 1024 * 1024


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
        """Rows that will not load: a row whose only problem is one of its images still loads (the
        admin page shows this beside the rows that load, and the two add up to the rows read)."""
        loading = self._loading_rows()
        return len({e.row for e in self.catalog.errors if e.row not in loading})

    def problems(self) -> list[dict[str, Any]]:
        """Each problem with what it does to its row, as it will happen: the row is skipped, or it
        loads without the image named (ignored, or not among the uploaded images)."""
        loading = self._loading_rows()
        rows = [{"problem": _consequence(e, e.row in loading), **e.as_dict()} for e in self.catalog.errors]
        rows += [{"problem": "image missing", **e.as_dict()} for e in self.warnings]
        return sorted(rows, key=lambda r: (r["row"], r["problem"]))

    def _loading_rows(self) -> set[int]:
        return {r.row for r in self.catalog.records}


def _consequence(error: RowError, loads: bool) -> str:
    if not loads:
        return "row skipped"
    return "image ignored" if error.field == "image" else "row loads"


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
    fmt = catalog_format(catalog_name, advice=f"upload {FORMATS_ADVICE}")
    catalog = parse_catalog(catalog_bytes, name=catalog_name, base_dir=None, fmt=fmt)
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
            try:
                path = safe_relative_path(ref, home_expands=True)
            except BundleError:
                catalog.errors.append(
                    RowError(
                        record.row,
                        "image",
                        f"{ref!r} is outside the upload: name a file in the uploaded images or an http(s) URL; "
                        "image ignored",
                        record.sku,
                        "image_outside_upload",
                    )
                )
                continue
            keep.append(ref)
            if prefix + path not in available:
                plan.warnings.append(
                    RowError(
                        record.row, "image", f"{ref!r} is not among the uploaded images", record.sku, "image_missing"
                    )
                )
        records.append(record if len(keep) == len(record.images) else record.model_copy(update={"images": tuple(keep)}))
    catalog.records = records
    return plan


def save_upload(app: ShopLens, plan: UploadPlan) -> Path:
    """Write the upload's images and catalog under `<home>/uploads/<timestamp>/`; point the plan's
    catalog at them. Returns the folder."""
    home = app.settings.home
    folder = upload_folder(home)
    images = folder / "images"
    if plan.zip_bytes is not None:
        extract_zip(plan.zip_bytes, images, BundleLimits.from_settings(app.settings))
    elif plan.files:
        save_files(plan.files, images, BundleLimits.from_settings(app.settings))
    else:
        images.mkdir(parents=True)
    name = PurePosixPath(plan.catalog_name.replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable()) or "catalog"  # a NUL or control character in an upload's name
    (folder / f"catalog-{name}").write_bytes(plan.catalog_bytes)
    plan.catalog.base_dir = images / plan.prefix if plan.prefix else images
    plan.catalog.source = f"upload {name} ({folder.name})"
    return folder


def ingest_upload(
    app: ShopLens,
    plan: UploadPlan,
    prune: bool = False,
    progress: ProgressFn | None = None,
    force_prune: bool = False,
) -> tuple[IngestResult, Path]:
    """Save the upload, ingest it in this process, write the report (the server runs it as a job)."""
    folder = save_upload(app, plan)
    try:
        result = ingestor_for(app).ingest(
            plan.catalog, prune=prune, trigger="admin", progress=progress, force_prune=force_prune
        )
    finally:
        remove_upload(folder, app.settings.home)
    report = app.settings.home / "reports" / f"run-{result.run_id}.csv"
    result.write_report(report)
    return result, report


# -- products -----------------------------------------------------------------------------------
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

"""Where a catalog comes from: a local file, or an http(s) export a shop system publishes."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlparse

from ingest.readers import (
    CATALOG_SUFFIXES,
    MAX_CATALOG_BYTES,
    Catalog,
    CatalogError,
    parse_catalog,
    read_catalog,
)
from services.fetch import FetchError, fetch_capped, is_url


def load_catalog(source: str, timeout: float = 30.0, deadline: float | None = None) -> Catalog:
    """Read a catalog path or URL; a URL that is down, slow or serves HTML is a CatalogError."""
    if not is_url(source):
        return read_catalog(Path(source))
    data, content_type = _download(source, timeout, deadline)
    if "html" in content_type:
        raise CatalogError(f"the catalog URL returned an HTML page ({content_type}), not CSV or JSONL: {source}")
    suffix = PurePosixPath(urlparse(source).path).suffix.lower()
    fmt = "jsonl" if "json" in content_type else CATALOG_SUFFIXES.get(suffix, "csv")
    catalog = parse_catalog(data, name=source, base_dir=None, fmt=fmt)
    catalog.records = [
        r.model_copy(update={"images": tuple(ref if is_url(ref) else urljoin(source, ref) for ref in r.images)})
        for r in catalog.records
    ]
    return catalog


def _download(url: str, timeout: float, deadline: float | None) -> tuple[bytes, str]:
    try:
        fetched = fetch_capped(url, MAX_CATALOG_BYTES, timeout, deadline=deadline)
    except FetchError as exc:
        raise CatalogError(f"the catalog URL {exc}: {url}") from None
    return fetched.data, fetched.content_type

"""The image stage of ingestion: read, hash, validate, store in media — one product at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ingest.records import ProductRecord, RowError
from ingest.remote import RemoteImage
from services.catalog.models import Product
from services.images import (
    EXTENSIONS,
    ImageError,
    ImageFetchError,
    ImageLimits,
    decode_for_model,
    is_url,
    local_path,
    probe_format,
    read_image_bytes,
    sha256_hex,
)
from services.media import MediaStore

log = logging.getLogger(__name__)
PrepareFn = Callable[[Image.Image], Any]  # an embedder's prepare_image


@dataclass
class ImageInfo:
    source: str
    sha256: str
    media_path: str
    width: int
    height: int
    prepared: Any = None  # a fresh photo made ready for the embedder here (None: it prepares it itself)


@dataclass
class PreparedProduct:
    record: ProductRecord
    images: list[ImageInfo]
    errors: list[RowError]


def local_image_stats(record: ProductRecord, base_dir: Path | None) -> tuple[str, ...]:
    """Size and mtime of local image files: a replaced file changes the row's fingerprint."""
    stats = []
    for ref in record.images:
        if is_url(ref):
            continue
        try:
            st = local_path(ref, base_dir).stat()
            stats.append(f"{ref}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            stats.append(f"{ref}:missing")
    return tuple(stats)


def prepare_images(
    record: ProductRecord,
    previous: Product | None,
    base_dir: Path | None,
    media: MediaStore,
    limits: ImageLimits,
    remote: Mapping[str, RemoteImage] | None = None,
    prepare: PrepareFn | None = None,
) -> PreparedProduct:
    """Every usable image of the record; a bad one is reported and, if it was stored before, kept.

    URL images come already asked for (`remote`, by ingest/remote.py): a 304 reuses the stored
    copy without reading it, a body is used as a local file's bytes would be. A new photo is
    decoded here and, with `prepare`, made ready for the embedder too, off the model's thread."""
    known = {img.sha256: img for img in previous.images} if previous else {}
    by_source = {img.source: img for img in previous.images} if previous else {}
    images: dict[str, ImageInfo] = {}
    errors: list[RowError] = []
    for ref in record.images:
        try:
            got = _asked(ref, remote)
            if got is not None and got.body is None and got.known is not None:  # 304: the stored copy stands
                k = got.known
                images.setdefault(k.sha256, ImageInfo(ref, k.sha256, k.media_path, k.width, k.height))
                continue
            data = got.body if got is not None and got.body is not None else read_image_bytes(ref, base_dir, limits)
            sha = (got.sha256_of_body if got is not None else None) or sha256_hex(data)
            if sha in images:
                continue
            old = known.get(sha)
            if old is not None and media.exists(old.media_path):
                images[sha] = ImageInfo(ref, sha, old.media_path, old.width, old.height)
                continue
            fmt, _, _ = probe_format(data, limits)
            decoded, (width, height) = decode_for_model(data, limits)
            relative = media.put(data, sha, EXTENSIONS.get(fmt, ".img"))
            images[sha] = ImageInfo(ref, sha, relative, width, height, _prepared(decoded, prepare))
        except ImageError as exc:
            kept = by_source.get(ref)
            note = ""
            if kept is not None and media.exists(kept.media_path) and kept.sha256 not in images:
                images[kept.sha256] = ImageInfo(ref, kept.sha256, kept.media_path, kept.width, kept.height)
                note = " (kept the previously stored copy)"
            what = str(exc) if ref in str(exc) else f"{ref}: {exc}"  # name the file, once
            errors.append(RowError(record.row, "image", f"{what}{note}", record.sku, exc.code))
    return PreparedProduct(record, list(images.values()), errors)


def _asked(ref: str, remote: Mapping[str, RemoteImage] | None) -> RemoteImage | None:
    """What asking for a URL image gave (None: a local file, or nothing asked: read it here)."""
    if remote is None or not is_url(ref):
        return None
    got = remote.get(ref)
    if got is not None and got.error is not None:
        raise got.error
    if got is None or (got.body is None and got.known is None):
        raise ImageFetchError(f"image URL was not fetched: {ref}")
    return got


def _prepared(photo: Image.Image, prepare: PrepareFn | None) -> Any:
    """None when it cannot be made ready here: the embedding step reads the stored copy again and
    reports what is wrong with it against its row."""
    if prepare is None:
        return None
    try:
        return prepare(photo)
    except Exception as exc:
        log.debug("preparing a photo for the embedder failed here (%s); the embedding step retries it", exc)
        return None

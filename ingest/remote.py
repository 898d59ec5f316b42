"""Image URLs across runs: what each served last time, asked again conditionally, remembered.

A catalog row that names its image by URL says nothing when the image behind the URL changes, so
the row's fingerprint carries the sha256 of the body each URL served. Every run asks the server
again: with validators (ETag, Last-Modified) a 304 costs no body and nothing is embedded; without
them the body is downloaded and compared by sha256, and only a different body changes the
fingerprint. A URL that cannot be checked keeps the sha256 it had, so its product keeps its
vectors; the run reports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.downloads import ImageDownloader, Validators
from services.catalog.models import ImageSource, utcnow
from services.catalog.store import CatalogStore
from services.fetch import Fetched, FetchError
from services.images import ImageFetchError, sha256_hex
from services.media import MediaStore


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True)
class Known:
    """An image_sources row, detached: what the URL served when last fetched."""

    sha256: str
    media_path: str
    width: int
    height: int
    etag: str | None
    last_modified: str | None


@dataclass
class RemoteImage:
    """One image URL in this run: what was known of it, and what asking again gave."""

    url: str
    known: Known | None
    fetched: Fetched | None = None  # None: not asked this run (or the asking failed)
    sha256_of_body: str | None = None  # of fetched.data when the server sent a body
    error: ImageFetchError | None = None

    @property
    def sha256(self) -> str | None:
        """The body the URL serves as far as this run knows (the stored one when asking failed)."""
        if self.sha256_of_body is not None:
            return self.sha256_of_body
        return self.known.sha256 if self.known else None

    @property
    def body(self) -> bytes | None:
        return self.fetched.data if self.fetched is not None and self.fetched.status == 200 else None

    def source_row(self, media_path: str, width: int, height: int) -> ImageSource | None:
        """What to remember after a body was served (None: nothing new to remember)."""
        if self.fetched is None or self.sha256 is None:
            return None
        k = self.known
        if k is not None and (k.sha256, k.media_path, k.etag, k.last_modified) == (
            self.sha256,
            media_path,
            self.fetched.etag or k.etag,
            self.fetched.last_modified or k.last_modified,
        ):
            return None  # a 304, or the same body with the same validators: the row stands
        return ImageSource(
            url_key=url_key(self.url),
            url=self.url,
            etag=(self.fetched.etag or (k.etag if self.fetched.status == 304 and k else None)),
            last_modified=(
                self.fetched.last_modified or (k.last_modified if self.fetched.status == 304 and k else None)
            ),
            sha256=self.sha256,
            media_path=media_path,
            width=width,
            height=height,
            checked_at=utcnow(),
        )


def url_stats(refs: Iterable[str], remote: dict[str, RemoteImage]) -> tuple[str, ...]:
    """The fingerprint's part for URL images: each URL with the body it serves (if ever fetched)."""
    return tuple(f"{ref}@{remote[ref].sha256}" for ref in refs if ref in remote and remote[ref].sha256)


def known_sources(catalog: CatalogStore, urls: Iterable[str]) -> dict[str, Known]:
    by_key = {url_key(u): u for u in urls}
    keys = list(by_key)
    found: dict[str, Known] = {}
    with catalog.session() as session:
        for start in range(0, len(keys), 500):
            for row in session.scalars(select(ImageSource).where(ImageSource.url_key.in_(keys[start : start + 500]))):
                found[by_key[row.url_key]] = Known(
                    row.sha256, row.media_path, row.width, row.height, row.etag, row.last_modified
                )
    return found


def fetch_all(images: Iterable[RemoteImage], downloader: ImageDownloader, pool: Executor, media: MediaStore) -> None:
    """Ask for every image at once (the downloader bounds connections); results land in place.

    Validators are sent only while the stored copy they vouch for is still in the media folder."""
    jobs = []
    for image in images:
        k = image.known
        validators = Validators(k.etag, k.last_modified) if k and media.exists(k.media_path) else None
        jobs.append((image, pool.submit(_get, downloader, image.url, validators)))
    for image, job in jobs:
        outcome = job.result()
        if isinstance(outcome, ImageFetchError):
            image.error = outcome
        else:
            image.fetched, image.sha256_of_body = outcome


def _get(
    downloader: ImageDownloader, url: str, validators: Validators | None
) -> tuple[Fetched, str | None] | ImageFetchError:
    try:
        fetched = downloader.get(url, validators)
    except FetchError as exc:
        return ImageFetchError(f"image URL {exc}: {url}")
    if fetched.status == 200 and not fetched.data:
        return ImageFetchError(f"image URL returned no data: {url}")
    return fetched, (sha256_hex(fetched.data) if fetched.status == 200 else None)


def save_sources(session: Session, rows: Iterable[ImageSource]) -> None:
    """Upsert by URL (the last row for a URL wins); inside the batch's own transaction."""
    wanted = {row.url_key: row for row in rows}
    if not wanted:
        return
    existing = {
        row.url_key: row for row in session.scalars(select(ImageSource).where(ImageSource.url_key.in_(list(wanted))))
    }
    for key, row in wanted.items():
        current = existing.get(key)
        if current is None:
            session.add(row)
            continue
        for column in ("url", "etag", "last_modified", "sha256", "media_path", "width", "height", "checked_at"):
            setattr(current, column, getattr(row, column))

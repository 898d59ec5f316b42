"""Images by URL, fetched as a crawler should: conditional re-fetch across runs, a changed image
behind the same URL re-embedding exactly its product, a per-host connection limit, retries that
back off, and one clear problem per bad URL while the rest lands.

Everything is real: images are served by local HTTP servers (tests/support/image_server.py) that
count what they were asked and what they sent; the store is SQLite, the model the tiny open_clip.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.downloads import ImageDownloader, Validators
from ingest.pipeline import IngestResult, ingestor_for
from ingest.remote import url_key
from ingest.sources import load_catalog
from services.catalog.models import ImageSource
from services.context import ShopLens
from services.fetch import FetchError
from services.images import ImageLimits, sha256_hex
from services.search import SearchRequest
from tests.support.catalog import product_photo, product_row, write_rows
from tests.support.image_server import ImageServer


def _jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    product_photo(seed, size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def images() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()


@pytest.fixture
def shop(settings_factory) -> Iterator[ShopLens]:
    app = ShopLens(settings_factory(download_retries=0))
    yield app
    app.close()


def _catalog(folder: Path, server: ImageServer, count: int) -> Path:
    rows = [product_row(i, [server.put(f"/img/{i}.jpg", _jpeg(700 + i))]) for i in range(count)]
    return write_rows(folder / "catalog.csv", rows)


def _ingest(app: ShopLens, catalog: Path) -> IngestResult:
    return ingestor_for(app).ingest(load_catalog(str(catalog)))


def _top(app: ShopLens, seed: int) -> str:
    return app.search.search(SearchRequest(image=product_photo(seed), top_k=3)).hits[0].sku


def test_conditional_requests_keep_their_connection(images: ImageServer) -> None:
    """A scheduled run asks for every image again and most answer 304: each must not cost a new
    connection (on HTTPS, a new handshake)."""
    urls = [images.put(f"/img/{i}.jpg", _jpeg(800 + i)) for i in range(12)]
    with ImageDownloader(ImageLimits(), workers=1, per_host=1) as downloader:
        first = {url: downloader.get(url) for url in urls}
        again = [downloader.get(url, Validators(f.etag, f.last_modified)) for url, f in first.items()]
    assert [f.status for f in again] == [304] * 12 and sum(images.not_modified.values()) == 12
    assert images.opened == 1, images.opened


def test_an_unchanged_rerun_downloads_no_image_and_a_changed_one_reembeds_exactly_its_product(
    shop: ShopLens, images: ImageServer, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path, images, 6)
    first = _ingest(shop, catalog)
    assert first.status == "succeeded" and first.counts.new == 6 and first.counts.images_embedded == 6
    assert first.counts.images_downloaded == 6 and all(images.bodies[f"/img/{i}.jpg"] == 1 for i in range(6))
    assert [ua.split(" ")[0].split("/")[0] for ua in images.user_agents] == ["ShopLens"]
    assert "product image fetcher" in images.user_agents.pop()

    again = _ingest(shop, catalog)  # every URL is asked, conditionally; each answers 304
    assert again.status == "succeeded" and not again.errors
    assert (again.counts.unchanged, again.counts.changed, again.counts.images_embedded) == (6, 0, 0)
    assert (again.counts.images_downloaded, again.counts.images_not_modified) == (0, 6)
    assert sum(images.bodies.values()) == 6 and sum(images.not_modified.values()) == 6
    assert all(images.requests[f"/img/{i}.jpg"] == 2 for i in range(6))

    images.put("/img/3.jpg", _jpeg(9_003))  # the shop replaced the photo; the catalog row is the same
    changed = _ingest(shop, catalog)
    assert changed.status == "succeeded"
    assert (changed.counts.unchanged, changed.counts.changed, changed.counts.images_embedded) == (5, 1, 1)
    assert changed.counts.images_downloaded == 1 and images.bodies["/img/3.jpg"] == 2
    assert sum(images.bodies.values()) == 7  # only the new body travelled
    product = shop.catalog.get_products(["SKU-0003"])["SKU-0003"]
    assert [img.sha256 for img in product.images] == [sha256_hex(images.images["/img/3.jpg"])]
    assert _top(shop, 9_003) == "SKU-0003"  # the new photo finds it
    with shop.catalog.session() as session:  # what a later run will send back
        row = session.get(ImageSource, url_key(f"{images.url}/img/3.jpg"))
        assert row is not None and row.etag == images.etag("/img/3.jpg")
        assert row.last_modified == images.modified["/img/3.jpg"] and row.sha256 == product.images[0].sha256

    settled = _ingest(shop, catalog)
    assert settled.counts.images_embedded == 0 and settled.counts.images_downloaded == 0


def test_a_server_without_validators_is_compared_by_sha256(settings_factory, tmp_path: Path) -> None:
    """No ETag, no Last-Modified: the body comes again each run, and only a different one is embedded."""
    server = ImageServer(validators=False)
    app = ShopLens(settings_factory(download_retries=0))
    try:
        catalog = _catalog(tmp_path, server, 4)
        assert _ingest(app, catalog).counts.images_embedded == 4
        again = _ingest(app, catalog)
        assert (again.counts.unchanged, again.counts.images_embedded, again.counts.images_downloaded) == (4, 0, 4)
        assert not server.not_modified
        server.put("/img/1.jpg", _jpeg(8_001))
        changed = _ingest(app, catalog)
        assert (changed.counts.changed, changed.counts.images_embedded) == (1, 1)
        assert _top(app, 8_001) == "SKU-0001"
    finally:
        app.close()
        server.close()


def test_bad_urls_each_get_a_problem_and_the_rest_lands(settings_factory, images: ImageServer, tmp_path: Path) -> None:
    slow = ImageServer(delay=2.0)
    app = ShopLens(settings_factory(download_retries=1, url_timeout=0.5, max_image_bytes=60_000))
    try:
        images.put("/moved/new.jpg", _jpeg(11))
        images.redirects["/old.jpg"] = "/moved/new.jpg"
        images.redirects["/loop.jpg"] = "/loop.jpg"
        noise = np.random.default_rng(12).integers(0, 256, (400, 400, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "JPEG", quality=95)
        images.put("/huge.jpg", buf.getvalue())
        assert len(images.images["/huge.jpg"]) > 60_000
        rows = [
            product_row(0, [images.put("/ok.jpg", _jpeg(10))]),
            product_row(1, [f"{images.url}/old.jpg"]),  # redirected: followed
            product_row(2, [f"{images.url}/missing.jpg"]),  # 404
            product_row(3, [slow.put("/slow.jpg", _jpeg(13))]),  # answers after 2 s: times out
            product_row(4, ["http://127.0.0.1:9/none.jpg"]),  # nothing listens: unreachable
            product_row(5, [f"{images.url}/huge.jpg"]),  # over max_image_bytes
            product_row(6, [f"{images.url}/loop.jpg"]),  # redirects to itself: bounded
        ]
        result = _ingest(app, write_rows(tmp_path / "catalog.csv", rows))
        assert result.status == "partial" and result.counts.new == 7
        problems = {e.sku: (e.code, e.message) for e in result.errors}
        assert set(problems) == {"SKU-0002", "SKU-0003", "SKU-0004", "SKU-0005", "SKU-0006"}
        assert all(code == "fetch_failed" for code, _ in problems.values())
        assert "answered HTTP 404" in problems["SKU-0002"][1] and "/missing.jpg" in problems["SKU-0002"][1]
        assert "timed out after 0.5 s" in problems["SKU-0003"][1]
        assert "is unreachable (cannot connect: Connection refused)" in problems["SKU-0004"][1]
        assert "is too large" in problems["SKU-0005"][1] and "limit 60,000" in problems["SKU-0005"][1]
        assert "redirected more than 5 times" in problems["SKU-0006"][1] and images.requests["/loop.jpg"] == 6
        products = app.catalog.get_products([f"SKU-{i:04d}" for i in range(6)])
        assert [len(products[f"SKU-{i:04d}"].images) for i in range(6)] == [1, 1, 0, 0, 0, 0]
        assert result.counts.images_embedded == 2 and _top(app, 11) == "SKU-0001"
        # a timeout is tried again (once here), a 404 and a too-large body are not
        assert slow.requests["/slow.jpg"] == 2
        assert images.requests["/missing.jpg"] == 1 and images.requests["/huge.jpg"] == 1
    finally:
        app.close()
        slow.close()


def test_a_url_that_cannot_be_checked_keeps_its_product_and_is_reported(
    shop: ShopLens, images: ImageServer, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path, images, 3)
    _ingest(shop, catalog)
    points = shop.vectors.count()
    images.failures["/img/1.jpg"] = (503, {})
    result = _ingest(shop, catalog)
    assert result.status == "partial" and result.counts.unchanged == 3 and result.counts.images_embedded == 0
    [problem] = result.errors
    assert (problem.sku, problem.code) == ("SKU-0001", "fetch_failed")
    assert "answered HTTP 503" in problem.message and "kept the previously stored copy" in problem.message
    assert shop.vectors.count() == points and len(shop.catalog.get_products(["SKU-0001"])["SKU-0001"].images) == 1
    assert _top(shop, 701) == "SKU-0001"
    del images.failures["/img/1.jpg"]
    back = _ingest(shop, catalog)
    assert back.status == "succeeded" and back.counts.images_embedded == 0 and back.counts.images_not_modified == 3


def test_the_per_host_limit_holds_while_other_hosts_proceed(settings_factory, tmp_path: Path) -> None:
    first, second = ImageServer(delay=0.15), ImageServer(delay=0.15)
    app = ShopLens(settings_factory(ingest_workers=8, download_per_host=3, ingest_batch_size=24))
    try:
        rows = [product_row(i, [(first if i % 2 else second).put(f"/img/{i}.jpg", _jpeg(300 + i))]) for i in range(24)]
        result = _ingest(app, write_rows(tmp_path / "catalog.csv", rows))
        assert result.status == "succeeded" and result.counts.images_embedded == 24
        for server in (first, second):
            assert server.max_active == 3 and server.max_connections <= 3  # reached, never exceeded
            assert sum(server.requests.values()) == 12
    finally:
        app.close()
        first.close()
        second.close()


def test_retries_back_off_and_wait_as_long_as_retry_after_asks(images: ImageServer) -> None:
    url = images.put("/busy.jpg", _jpeg(1))
    images.failures["/busy.jpg"] = (429, {"Retry-After": "1"})
    limits = ImageLimits(url_timeout=2.0, url_deadline=10.0)
    with ImageDownloader(limits, workers=2, per_host=2, retries=2) as downloader:
        started = time.monotonic()
        with pytest.raises(FetchError, match="answered HTTP 429"):
            downloader.get(url)
        assert time.monotonic() - started >= 2.0  # two waits of the asked second
        assert images.requests["/busy.jpg"] == 3 and downloader.counts["retried"] == 2

        images.failures["/busy.jpg"] = (503, {"Retry-After": "3600"})  # an hour: left to a later run
        started = time.monotonic()
        with pytest.raises(FetchError, match="answered HTTP 503"):
            downloader.get(url)
        assert time.monotonic() - started < 1.0 and images.requests["/busy.jpg"] == 4

        del images.failures["/busy.jpg"]
        fetched = downloader.get(url)
        assert fetched.status == 200 and fetched.etag == images.etag("/busy.jpg")
        assert downloader.get(url, Validators(fetched.etag, fetched.last_modified)).status == 304
        assert downloader.get(url, Validators(None, fetched.last_modified)).status == 304
        assert downloader.get(url, Validators('"stale"', None)).data == images.images["/busy.jpg"]
    assert images.bodies["/busy.jpg"] == 2 and images.not_modified["/busy.jpg"] == 2

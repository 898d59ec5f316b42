"""Runs that repair what an earlier run could not finish: an image whose download failed, and a
vector store that lost its points. Both used to be trusted by unchanged re-runs for good."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import pytest

from ingest.pipeline import ingestor_for
from ingest.reconcile import collect_stats, reconcile
from ingest.sources import load_catalog
from services.context import ShopLens
from services.search import SearchRequest
from tests.support.catalog import product_photo, product_row, write_catalog, write_rows
from tests.support.http_server import RouteServer


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    product_photo(seed).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _url_catalog(folder: Path, server: RouteServer, count: int) -> Path:
    for i in range(count):
        server.routes[f"/img/{i}.jpg"] = (200, "image/jpeg", _jpeg(500 + i), 0.0)
    rows = [product_row(i, [f"{server.url}/img/{i}.jpg"]) for i in range(count)]
    return write_rows(folder / "catalog.csv", rows)


def test_an_image_that_failed_once_is_fetched_again_by_the_next_run(
    settings_factory, database_url: str, tmp_path: Path, route_server: RouteServer
) -> None:
    # retries within a run are tests/ingest/test_image_fetch.py's; here each run asks once
    app = ShopLens(settings_factory(database_url=database_url, image_retry_backoff=0, download_retries=0))
    try:
        catalog = _url_catalog(tmp_path / "shop", route_server, 3)
        good = route_server.routes["/img/1.jpg"]
        route_server.routes["/img/1.jpg"] = (503, "text/plain", b"try later", 0.0)
        first = ingestor_for(app).ingest(load_catalog(str(catalog)))
        assert first.counts.new == 3 and [e.code for e in first.errors] == ["fetch_failed"]
        assert app.catalog.awaiting_images() == ["SKU-0001"]
        assert "lack an image whose download failed" in reconcile(ingestor_for(app), dry_run=True).summary()

        route_server.routes["/img/1.jpg"] = good  # the shop's image server is back
        second = ingestor_for(app).ingest(load_catalog(str(catalog)))
        assert second.status == "succeeded" and not second.errors
        assert (second.counts.unchanged, second.counts.changed, second.counts.image_retries) == (3, 0, 1)
        assert second.counts.images_embedded == 1 and route_server.hits["/img/1.jpg"] == 2
        assert len(app.catalog.get_products(["SKU-0001"])["SKU-0001"].images) == 1
        assert app.catalog.awaiting_images() == [] and collect_stats(app)["consistent"]

        # nothing failed: no retry; each URL is asked once whether its image changed (this server sends
        # no ETag or Last-Modified, so the body comes again, is compared by sha256, and nothing is embedded)
        third = ingestor_for(app).ingest(load_catalog(str(catalog)))
        assert third.counts.image_retries == 0 and third.counts.images_embedded == 0
        assert (third.counts.unchanged, third.counts.changed, third.counts.images_downloaded) == (3, 0, 3)
        assert route_server.hits == {"/img/0.jpg": 3, "/img/1.jpg": 3, "/img/2.jpg": 3}  # one request a run
    finally:
        app.close()


def test_failed_images_wait_longer_after_each_failure(
    settings_factory, database_url: str, tmp_path: Path, route_server: RouteServer
) -> None:
    app = ShopLens(settings_factory(database_url=database_url, image_retry_backoff=3600, download_retries=0))
    try:
        catalog = _url_catalog(tmp_path / "shop", route_server, 2)
        route_server.routes["/img/0.jpg"] = (503, "text/plain", b"try later", 0.0)
        ingestor_for(app).ingest(load_catalog(str(catalog)))
        product = app.catalog.get_products(["SKU-0000"])["SKU-0000"]
        assert product.image_failures == 1 and product.retry_after is not None

        waiting = ingestor_for(app).ingest(load_catalog(str(catalog)))  # within the hour: not yet
        assert (waiting.counts.image_retries, waiting.counts.image_retries_waiting) == (0, 1)
        assert route_server.hits["/img/0.jpg"] == 1 and "1 waiting for a later run" in waiting.summary()

        with app.catalog.session() as session:  # the hour has passed
            session.get(type(product), product.id).retry_after = product.created_at
        ingestor_for(app).ingest(load_catalog(str(catalog)))
        again = app.catalog.get_products(["SKU-0000"])["SKU-0000"]
        assert route_server.hits["/img/0.jpg"] == 2 and again.image_failures == 2
        assert (again.retry_after - product.retry_after).total_seconds() > 3600  # twice the wait

        write_rows(catalog, [product_row(0, [f"{route_server.url}/img/0b.jpg"]), product_row(1, [])])
        route_server.routes["/img/0b.jpg"] = (200, "image/jpeg", _jpeg(99), 0.0)
        ingestor_for(app).ingest(load_catalog(str(catalog)))  # a changed row is read at once
        assert app.catalog.awaiting_images() == []
    finally:
        app.close()


def test_ingest_rewrites_vectors_lost_from_the_vector_store(
    settings_factory, database_url: str, tmp_path: Path
) -> None:
    settings = settings_factory(database_url=database_url)
    catalog = write_catalog(tmp_path / "shop", 6)
    app = ShopLens(settings)
    assert ingestor_for(app).ingest(load_catalog(str(catalog))).counts.new == 6
    app.close()
    shutil.rmtree(settings.edge_path if settings.edge_path.exists() else settings.qdrant_path)  # the folder is gone

    app = ShopLens(settings)
    try:
        assert not collect_stats(app)["consistent"]
        result = ingestor_for(app).ingest(load_catalog(str(catalog)))
        assert result.status == "succeeded" and result.counts.unchanged == 6 and result.counts.resynced == 6
        assert result.counts.images_embedded == 6 and "written again" in result.summary()
        assert collect_stats(app)["consistent"]
        for i in (0, 5):  # every product is searchable again: its own photo finds it first
            hits = app.search.search(SearchRequest(image=product_photo(1000 * i), top_k=3)).hits
            assert hits[0].sku == f"SKU-{i:04d}"
        again = ingestor_for(app).ingest(load_catalog(str(catalog)))  # in sync: one count, nothing more
        assert again.counts.resynced == 0 and again.counts.images_embedded == 0
    finally:
        app.close()


def test_a_failed_embedding_is_reported_once_with_its_line(settings_factory, tmp_path: Path, fake_dashscope) -> None:
    """The run tries each row once; the products left pending are the next run's work, not a
    second attempt (and a second copy of the problem at "line 0") at the end of this one."""
    settings = settings_factory(
        embedder="dashscope",
        dashscope_base_url=fake_dashscope.base_url,
        dashscope_api_key=fake_dashscope.api_key,
        dashscope_requests_per_minute=100000,
    )
    app = ShopLens(settings)
    try:
        catalog = write_catalog(tmp_path / "shop", 3)
        fake_dashscope.queue_fault("data_inspection", times=2)  # the first two image requests are refused
        result = ingestor_for(app).ingest(load_catalog(str(catalog)))
        problems = [(e.row, e.sku, e.field, e.code) for e in result.errors]
        assert problems == [(2, "SKU-0000", "image", "embed_failed"), (3, "SKU-0001", "image", "embed_failed")]
        assert app.catalog.counts()["unsynced"] == 2
        again = ingestor_for(app).ingest(load_catalog(str(catalog)))  # the next run finishes them
        assert again.status == "succeeded" and again.counts.images_embedded == 2
        assert app.catalog.counts()["unsynced"] == 0
    finally:
        app.close()


def test_a_catalog_photo_searched_as_it_was_ingested_scores_one(app: ShopLens, tmp_path: Path) -> None:
    """Ingestion, the API (and the CLI) and `eval` decode a photo the same way: a large JPEG is
    decoded at a reduced scale in each, never fully in one and reduced in another."""
    from ingest.evaluate import Query, evaluate
    from server import schemas
    from server.state import run_search
    from services.images import load_image

    shop = tmp_path / "shop"
    (shop / "images").mkdir(parents=True)
    for i in range(3):
        product_photo(700 + i, size=(2400, 1800)).save(shop / "images" / f"big{i}.jpg", "JPEG", quality=90)
    write_rows(shop / "catalog.csv", [product_row(i, [f"images/big{i}.jpg"]) for i in range(3)])
    ingestor_for(app).ingest(load_catalog(str(shop / "catalog.csv")))
    for i in range(3):
        data = (shop / "images" / f"big{i}.jpg").read_bytes()
        top = run_search(app, schemas.SearchQuery(top_k=1), data).hits[0]
        assert top.sku == f"SKU-{i:04d}" and top.score > 0.9999
    result = evaluate(app, [Query(2, "SKU-0001", "images/big1.jpg", None)], shop)  # eval's own reading
    assert result.recall[1] == 1.0
    as_eval_reads_it = load_image("images/big1.jpg", shop, app.limits)
    top = app.search.search(SearchRequest(image=as_eval_reads_it, top_k=1)).hits[0]
    assert top.sku == "SKU-0001" and top.score > 0.9999


def test_a_photo_the_decode_threads_cannot_prepare_is_prepared_again_or_reported(
    app: ShopLens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photos are made ready for the model in the decode threads. One that fails there is read
    from media and prepared in the embedding step; one that fails there too is reported with its
    line and the rest lands."""
    shop = tmp_path / "shop"
    (shop / "images").mkdir(parents=True)
    sizes = [(320, 240), (333, 222), (320, 240)]  # the second photo cannot be prepared anywhere
    for i, size in enumerate(sizes):
        product_photo(900 + i, size).save(shop / "images" / f"p{i}.jpg", "JPEG", quality=90)
    write_rows(shop / "catalog.csv", [product_row(i, [f"images/p{i}.jpg"]) for i in range(3)])
    prepare, where = app.embedder.prepare_image, []

    def prepare_image(image):
        thread = threading.current_thread().name
        where.append(thread)
        if thread.startswith("images") or image.size == (333, 222):
            raise ValueError("this photo cannot be made ready here")
        return prepare(image)

    monkeypatch.setattr(app.embedder, "prepare_image", prepare_image)
    result = ingestor_for(app).ingest(load_catalog(str(shop / "catalog.csv")))
    assert sum(name.startswith("images") for name in where) == 3  # each tried in a decode thread first
    problems = [(e.row, e.sku, e.field, e.code) for e in result.errors]
    assert problems == [(3, "SKU-0001", "image", "embed_failed")], result.errors
    assert "cannot be made ready here" in result.errors[0].message
    assert result.counts.images_embedded == 2 and app.catalog.counts()["unsynced"] == 1
    for i in (0, 2):
        assert app.search.search(SearchRequest(image=product_photo(900 + i), top_k=1)).hits[0].sku == f"SKU-{i:04d}"

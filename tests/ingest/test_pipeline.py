"""Ingest → search end to end on SQLite and PostgreSQL, embedded Qdrant, the tiny open_clip model."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from ingest.pipeline import IngestResult, ingestor_for
from ingest.readers import read_catalog
from ingest.reconcile import collect_stats
from services.context import ShopLens
from services.search import LEXICAL_WEIGHT, SearchFilters, SearchRequest
from services.vectors import TEXT, PointFilter
from tests.support.catalog import (
    product_photo,
    product_row,
    read_rows,
    variant,
    write_catalog,
    write_rows,
)


def ingest(app: ShopLens, path: Path, prune: bool = False) -> IngestResult:
    result = ingestor_for(app).ingest(read_catalog(path), prune=prune)
    assert result.status in {"succeeded", "partial"}, result.message
    return result


def assert_consistent(app: ShopLens, products: int, images: int) -> None:
    stats = collect_stats(app)
    assert stats["sql"]["products"] == products and stats["sql"]["images"] == images, stats
    assert stats["qdrant"] == {"image_points": images, "text_points": products}, stats
    assert stats["consistent"], stats


def search(app: ShopLens, **kwargs: object) -> list[str]:
    return [h.sku for h in app.search.search(SearchRequest(**kwargs)).hits]


def test_photo_search_finds_product_from_own_and_variant_photo(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 12)
    result = ingest(app, catalog)
    assert (result.counts.new, result.counts.images_embedded, result.counts.texts_embedded) == (12, 12, 12)
    assert result.status == "succeeded" and not result.errors
    assert_consistent(app, 12, 12)
    for i in (0, 5, 11):
        photo = Image.open(tmp_path / "shop" / "images" / f"p{i}-0.jpg").convert("RGB")
        hits = app.search.search(SearchRequest(image=photo, top_k=3)).hits
        assert hits[0].sku == f"SKU-{i:04d}" and hits[0].score > 0.99
        assert hits[0].image is not None and hits[0].image.is_file()  # media copy for the storefront
        assert search(app, image=variant(photo, i), top_k=3)[0] == f"SKU-{i:04d}"


def test_text_search_and_photo_plus_text(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 10)
    ingest(app, catalog)
    row = read_rows(catalog)[7]
    response = app.search.search(SearchRequest(text=f"{row['title']}. {row['description']}", top_k=3))
    assert response.hits[0].sku == "SKU-0007"
    assert "text->image" in response.kinds and "text->text" in response.kinds
    photo = Image.open(catalog.parent / "images" / "p3-0.jpg").convert("RGB")
    text = read_rows(catalog)[3]["title"]
    both = app.search.search(SearchRequest(image=photo, text=text, text_weight=0.3, top_k=3))
    assert both.hits[0].sku == "SKU-0003"
    assert [h.score for h in both.hits] == sorted((h.score for h in both.hits), reverse=True)
    # the score is the exact weighted cosine: 0.7·photo↔image + 0.3·(½ text↔image + ½ text↔product text)
    e = app.embedder
    stored = e.embed_image(photo)
    q_img, q_txt = e.embed_image(photo), e.embed_text(text)
    row = read_rows(catalog)[3]
    product_text = e.embed_text(f"{row['title']} ({row['brand']}). {row['description']}")
    expected = 0.7 * float(q_img @ stored) + 0.3 * (0.5 * float(q_txt @ stored) + 0.5 * float(q_txt @ product_text))
    assert both.hits[0].semantic == pytest.approx(expected, abs=1e-4)
    # its words are the product's title: BM25 adds its share to the semantic score
    assert both.hits[0].lexical == 1.0 and both.hits[0].score == pytest.approx(expected + 0.3 * LEXICAL_WEIGHT)


def test_filters_are_applied(app: ShopLens, tmp_path: Path) -> None:
    ingest(app, write_catalog(tmp_path / "shop", 12))
    photo = product_photo(0)
    by_category = app.search.search(
        SearchRequest(image=photo, top_k=20, filters=SearchFilters(categories=("Bags",)))
    ).hits
    assert by_category and {h.category for h in by_category} == {"Bags"} and len(by_category) == 3
    by_brand = app.search.search(
        SearchRequest(image=photo, top_k=20, filters=SearchFilters(brands=("Acme", "Globex")))
    ).hits
    assert {h.brand for h in by_brand} == {"Acme", "Globex"} and len(by_brand) == 8
    priced = app.search.search(
        SearchRequest(image=photo, top_k=20, filters=SearchFilters(min_price=20, max_price=40))
    ).hits
    assert sorted(h.price for h in priced) == [20.0, 25.0, 30.0, 35.0, 40.0]
    in_stock = app.search.search(SearchRequest(image=photo, top_k=20, filters=SearchFilters(in_stock_only=True))).hits
    assert len(in_stock) == 8 and all(h.in_stock for h in in_stock)
    text_filtered = app.search.search(
        SearchRequest(text="product", top_k=20, filters=SearchFilters(categories=("Lamps",)))
    ).hits
    assert {h.category for h in text_filtered} == {"Lamps"}
    paged = search(app, image=photo, top_k=4, offset=4)
    assert paged == search(app, image=photo, top_k=8)[4:8]
    scores = [h.score for h in app.search.search(SearchRequest(image=photo, top_k=3)).hits]
    cut = (scores[0] + scores[1]) / 2
    assert search(app, image=photo, top_k=20, min_score=cut) == ["SKU-0000"]


def test_a_product_with_three_images_appears_once(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 5, images_per_product=3)
    ingest(app, catalog)
    assert_consistent(app, 5, 15)
    photo = Image.open(tmp_path / "shop" / "images" / "p2-1.jpg").convert("RGB")
    hits = app.search.search(SearchRequest(image=photo, top_k=10)).hits
    assert [h.sku for h in hits].count("SKU-0002") == 1 and len({h.sku for h in hits}) == len(hits) == 5
    assert hits[0].sku == "SKU-0002" and hits[0].image_source == "images/p2-1.jpg"


def test_reruns_are_incremental(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 8)
    ingest(app, catalog)
    again = ingest(app, catalog)
    assert (again.counts.unchanged, again.counts.images_embedded, again.counts.texts_embedded) == (8, 0, 0)

    rows = read_rows(catalog)
    rows[1]["price"] = "999.00"  # price only: payload update, nothing re-embedded
    write_rows(catalog, rows)
    priced = ingest(app, catalog)
    assert (priced.counts.changed, priced.counts.unchanged) == (1, 7)
    assert (priced.counts.images_embedded, priced.counts.texts_embedded) == (0, 0)
    expensive = app.search.search(
        SearchRequest(image=product_photo(0), top_k=5, filters=SearchFilters(min_price=500))
    ).hits
    assert [h.sku for h in expensive] == ["SKU-0001"] and expensive[0].price == 999.0

    rows[2]["title"] = "A renamed product"  # text change: only the text is re-embedded
    write_rows(catalog, rows)
    renamed = ingest(app, catalog)
    assert (renamed.counts.changed, renamed.counts.images_embedded, renamed.counts.texts_embedded) == (1, 0, 1)

    product_photo(424242).save(tmp_path / "shop" / "images" / "p3-0.jpg", quality=92)  # a new photo, same path
    os.utime(tmp_path / "shop" / "images" / "p3-0.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))
    rephoto = ingest(app, catalog)
    assert (rephoto.counts.changed, rephoto.counts.images_embedded, rephoto.counts.texts_embedded) == (1, 1, 0)
    assert search(app, image=product_photo(424242), top_k=1) == ["SKU-0003"]
    assert_consistent(app, 8, 8)


def test_prune_removes_missing_products_everywhere(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 6)
    ingest(app, catalog)
    rows = read_rows(catalog)
    write_rows(catalog, rows[:4])
    kept = ingest(app, catalog)  # without --prune nothing is removed
    assert kept.counts.pruned == 0
    assert_consistent(app, 6, 6)
    pruned = ingest(app, catalog, prune=True)
    assert pruned.counts.pruned == 2
    assert_consistent(app, 4, 4)
    assert "SKU-0005" not in search(app, image=product_photo(5000), top_k=10)
    media_files = [p for p in app.media.root.glob("??/*") if p.is_file()]
    assert len(media_files) == 4  # their photos left the media folder too


def test_embedder_change_needs_no_manual_step(
    app: ShopLens, settings_factory, database_url: str, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    """Vectors of another identity live in another collection; reindex rebuilds from SQL + media."""
    catalog = write_catalog(tmp_path / "shop", 4)
    ingest(app, catalog)
    for image in (tmp_path / "shop" / "images").iterdir():
        image.unlink()  # reindex must not need the original files
    result = ingestor_for(app).reindex()
    assert result.status == "succeeded" and result.counts.images_embedded == 4
    assert_consistent(app, 4, 4)
    assert search(app, image=product_photo(2000), top_k=1) == ["SKU-0002"]


# -- bad input -----------------------------------------------------------------------------
def _bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_bad_images_are_reported_and_the_rest_lands(app: ShopLens, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    catalog = write_catalog(shop, 3)
    good = _bytes(product_photo(77), "JPEG")
    bad = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + os.urandom(2000),
        "truncated.jpg": good[: len(good) // 2],
        "empty.jpg": b"",
        "notes.txt": b"this is not an image at all",
        "vector.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "icon.ico": _bytes(product_photo(5, (64, 64)).resize((32, 32)), "ICO"),
        "huge.png": _png_header(100_000, 100_000),
    }
    for name, data in bad.items():
        (shop / "images" / name).write_bytes(data)
    rows = read_rows(catalog)
    for index, name in enumerate(list(bad) + ["missing.jpg"]):
        rows.append(product_row(100 + index, [f"images/{name}"]))
    rows.append(product_row(200, ["images/p0-0.jpg", "images/corrupt.jpg"]))  # one good, one bad image
    write_rows(catalog, rows)
    result = ingest(app, catalog)
    assert result.status == "partial"
    messages = {e.sku: e.message for e in result.errors}
    assert set(messages) == {f"SKU-{100 + i:04d}" for i in range(8)} | {"SKU-0200"}
    assert "truncated" in messages["SKU-0101"] or "corrupt" in messages["SKU-0101"]
    assert "empty" in messages["SKU-0102"]
    assert "format" in messages["SKU-0103"] and "format" in messages["SKU-0104"]
    assert "unsupported image format ICO" in messages["SKU-0105"]
    assert "100000x100000" in messages["SKU-0106"]
    assert "not found" in messages["SKU-0107"]
    assert all(e.field == "image" and e.code == "bad_image" for e in result.errors)
    # products with a bad image still land (text-searchable); the good image of SKU-0200 is there
    assert_consistent(app, 3 + 8 + 1, 3 + 1)
    assert search(app, image=product_photo(0), top_k=2)[0] in {"SKU-0000", "SKU-0200"}


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_bad_rows_are_reported_and_the_rest_lands(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 4)
    rows = read_rows(catalog)
    rows.append(product_row(50, ["images/p0-0.jpg"], price="twelve"))
    rows.append(product_row(51, ["images/p0-0.jpg"], price="-3"))
    rows.append(product_row(52, ["images/p1-0.jpg"], sku=""))
    rows.append(product_row(53, ["images/p1-0.jpg"], title=""))
    rows.append(product_row(54, ["images/p1-0.jpg"], in_stock="maybe"))
    rows.append(product_row(55, ["images/p1-0.jpg"], currency="EURO"))
    rows.append(product_row(2, ["images/p2-0.jpg"], title="duplicate of SKU-0002"))
    write_rows(catalog, rows)
    result = ingest(app, catalog)
    assert result.counts.new == 4 and result.counts.failed == 7
    by_line = {(e.row, e.field): e.message for e in result.errors}
    assert by_line[(6, "price")].startswith("'twelve' is not a decimal")
    assert "negative" in by_line[(7, "price")]
    assert by_line[(8, "sku")] == "is required" and by_line[(9, "title")] == "is required"
    assert "yes/no" in by_line[(10, "in_stock")] and "currency" in by_line[(11, "currency")]
    assert "duplicate SKU 'SKU-0002' (first on line 4)" in by_line[(12, "sku")]
    assert_consistent(app, 4, 4)
    codes = {(e.row, e.field): e.code for e in result.errors}  # stable codes, as the API's errors have
    assert codes[(6, "price")] == "invalid_field" and codes[(8, "sku")] == "missing_field"
    assert codes[(12, "sku")] == "duplicate_sku"
    report = tmp_path / "report.csv"
    result.write_report(report)
    reported = read_rows(report)
    assert len(reported) == 7 and {r["code"] for r in reported} == {"invalid_field", "missing_field", "duplicate_sku"}


def test_a_broken_row_keeps_the_stored_product(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 3)
    ingest(app, catalog)
    rows = read_rows(catalog)
    rows[0]["price"] = "oops"
    write_rows(catalog, rows)
    result = ingest(app, catalog, prune=True)  # an invalid row is not a missing product
    assert result.counts.pruned == 0 and result.counts.failed == 1
    assert app.catalog.get_product("SKU-0000").price is not None
    assert_consistent(app, 3, 3)


def test_an_image_that_goes_away_keeps_its_stored_copy(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 3)
    ingest(app, catalog)
    (tmp_path / "shop" / "images" / "p1-0.jpg").unlink()
    result = ingest(app, catalog)
    assert [e.sku for e in result.errors] == ["SKU-0001"] and "kept the previously stored copy" in result.errors[
        0
    ].message
    assert_consistent(app, 3, 3)
    assert search(app, image=product_photo(1000), top_k=1) == ["SKU-0001"]


def test_jsonl_catalog_with_image_lists(app: ShopLens, tmp_path: Path) -> None:
    write_catalog(tmp_path / "shop", 3)
    rows = [product_row(i, [f"images/p{i}-0.jpg"]) for i in range(3)]
    rows[0]["image"] = ["images/p0-0.jpg", "images/p1-0.jpg"]
    rows[1]["price"] = 25.5
    rows[2]["in_stock"] = False
    path = write_rows(tmp_path / "shop" / "catalog.jsonl", rows, fmt="jsonl")
    result = ingest(app, path)
    assert result.counts.new == 3 and not result.errors
    assert_consistent(app, 3, 4)
    assert app.catalog.get_product("SKU-0002").in_stock is False
    assert float(app.catalog.get_product("SKU-0001").price) == 25.5
    assert app.catalog.get_product("SKU-0000").attributes["color"] == "red"


def test_a_run_builds_the_search_index_once_at_the_end(settings_factory, tmp_path: Path) -> None:
    """Bulk load: the HNSW graph is built after the run's writes; an unchanged re-run builds nothing;
    a small update is searchable at once without a rebuild."""
    app = ShopLens(settings_factory(edge_indexing_threshold_kb=1, edge_full_scan_threshold_kb=1))
    try:
        catalog = write_catalog(tmp_path / "shop", 20)
        first = ingest(app, catalog)
        assert first.counts.indexed_vectors == 40 and "search index built over 40 vectors" in first.summary()
        photo = Image.open(tmp_path / "shop" / "images" / "p7-0.jpg").convert("RGB")
        assert search(app, image=photo, top_k=1) == ["SKU-0007"]
        again = ingest(app, catalog)
        assert again.counts.indexed_vectors == 0
        rows = read_rows(catalog)
        rows[3]["title"] = "A completely different lamp"
        write_rows(catalog, rows)
        ingest(app, catalog)  # one text point rewritten: too little to index, scanned exactly
        changed = app.catalog.get_product("SKU-0003")
        hits = app.vectors.search_grouped(app.embedder.embed_text(changed.text), TEXT, PointFilter(kind=TEXT), 1)
        assert hits[0].payload["sku"] == "SKU-0003" and hits[0].score > 0.999
        assert_consistent(app, 20, 20)
    finally:
        app.close()


def test_nul_bytes_never_fail_the_run(app: ShopLens, tmp_path: Path) -> None:
    """PostgreSQL refuses NUL in text, and paths with NUL crash file calls: the row is reported."""
    catalog = write_catalog(tmp_path / "shop", 2)
    raw = (
        catalog.read_bytes().rstrip(b"\n")
        + b"\nSKU-0050,Bad\x00title,,,,,,,\nSKU-0051,Bad path,,,,,,,images/p\x001.jpg\n"
    )
    catalog.write_bytes(raw)
    result = ingest(app, catalog)
    assert result.status == "partial" and result.counts.new == 2 and result.counts.failed == 2
    assert {(e.sku, e.field) for e in result.errors} == {("SKU-0050", "title"), ("SKU-0051", "image")}
    assert_consistent(app, 2, 2)


def test_report_cells_never_start_a_formula(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 1)
    rows = read_rows(catalog)
    rows.append(product_row(60, [], sku="=cmd|' /C calc'!A0", price="@SUM(1)"))
    write_rows(catalog, rows)
    result = ingest(app, catalog)
    report = tmp_path / "report.csv"
    result.write_report(report)
    text = report.read_text()
    assert "'=cmd|' /C calc'!A0" in text and "\n=" not in text and ",=" not in text


def test_a_dripping_server_cannot_hold_a_run(settings_factory, route_server, tmp_path: Path) -> None:
    """A server that sends a byte now and then stays under every read timeout; the whole download
    has a deadline, so the run goes on with a per-row problem (and the lock is not held for long)."""
    from ingest.readers import CatalogError
    from ingest.sources import load_catalog

    slow = _bytes(product_photo(3), "JPEG")
    route_server.routes["/slow.jpg"] = (200, "image/jpeg", slow, 0.0)
    route_server.drips["/slow.jpg"] = 0.05  # the photo would take minutes
    catalog = write_catalog(tmp_path / "shop", 2)
    rows = read_rows(catalog)
    rows.append(product_row(70, [f"{route_server.url}/slow.jpg"]))
    write_rows(catalog, rows)
    app = ShopLens(settings_factory(url_timeout=1.0, url_deadline=1.5))
    try:
        started = time.monotonic()
        result = ingest(app, catalog)
        assert time.monotonic() - started < 30
        assert result.counts.new == 3 and [e.sku for e in result.errors] == ["SKU-0070"]
        assert "took longer than 1.5 s" in result.errors[0].message and result.errors[0].code == "fetch_failed"
        route_server.routes["/catalog.csv"] = (200, "text/csv", catalog.read_bytes(), 0.0)
        route_server.drips["/catalog.csv"] = 0.05
        with pytest.raises(CatalogError, match="took longer than 1.5 s"):
            load_catalog(f"{route_server.url}/catalog.csv", timeout=1.0, deadline=1.5)
    finally:
        app.close()

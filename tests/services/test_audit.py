"""The catalog audit's mechanics on real parts (SQLite, the embedded vector engine, the tiny
open_clip model). Its random weights still map a re-encoded photo next to the original, so
duplicates are found for real; category votes only have to be well-formed here, and
bench/audit.py measures their quality with the offline embedder's real weights.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.pipeline import ingestor_for
from ingest.sources import load_catalog
from ingest.sync import desired_state
from services.audit import (
    AuditError,
    Auditor,
    Evidence,
    Listing,
    audit,
    category_vote,
    duplicate_groups,
    judge,
    knn_vote,
    temperatures,
)
from services.context import ShopLens
from services.settings import Settings
from services.vectors import IMAGE, TEXT, PointFilter
from tests.support.catalog import CATEGORIES, product_photo, product_row, write_rows

PRODUCTS = 12


def jpeg_copy(path: Path, out: Path, quality: int = 60) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").save(out, "JPEG", quality=quality)


def settings_for(home: Path, tiny_clip_dir: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "embedder": "openclip",
        "openclip_model": f"local-dir:{tiny_clip_dir}",
        "ingest_batch_size": 8,
        "min_score": -1.0,
    }
    return Settings(_env_file=None, **{**values, **extra})


def damaged_catalog(folder: Path) -> Path:
    """12 products in four categories, plus: COPY-0003 (product 3's photo re-encoded under a new
    SKU), TWINS (one product with two near-identical photos), BLANK (no category), NOPHOTO."""
    images = folder / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(PRODUCTS):
        product_photo(1000 * i).save(images / f"p{i}.jpg", "JPEG", quality=92)
        rows.append(product_row(i, [f"images/p{i}.jpg"]))
    jpeg_copy(images / "p3.jpg", images / "copy3.jpg", 55)
    rows.append(product_row(3, ["images/copy3.jpg"], sku="COPY-0003", title="Cheap lookalike"))
    product_photo(77).save(images / "twin-a.jpg", "JPEG", quality=92)
    jpeg_copy(images / "twin-a.jpg", images / "twin-b.jpg", 70)
    rows.append(product_row(40, ["images/twin-a.jpg", "images/twin-b.jpg"], sku="TWINS"))
    product_photo(555).save(images / "blank.jpg", "JPEG", quality=92)
    rows.append(product_row(41, ["images/blank.jpg"], sku="BLANK", category=""))
    rows.append(product_row(42, [], sku="NOPHOTO", image=""))
    return write_rows(folder / "catalog.csv", rows)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[tuple[ShopLens, Path]]:
    base = tmp_path_factory.mktemp("audit")
    catalog = damaged_catalog(base / "catalog")
    app = ShopLens(settings_for(base / "home", tiny_clip_dir))
    result = ingestor_for(app).ingest(load_catalog(str(catalog)))
    assert result.status in ("succeeded", "partial"), result.summary()
    yield app, catalog
    app.close()


def test_finds_copied_photos_and_never_a_products_own(shop: tuple[ShopLens, Path]) -> None:
    app, _ = shop
    report = audit(app)
    groups = [d.skus for d in report.duplicates]
    assert ["COPY-0003", "SKU-0003"] in groups
    assert all(len(set(g)) == len(g) > 1 for g in groups)
    assert not any(g == ["TWINS"] for g in groups)  # its two photos are one product
    assert report.duplicate_threshold is not None
    copy = next(d for d in report.duplicates if "COPY-0003" in d.skus)
    assert report.duplicate_threshold <= copy.score <= 1.0001


def test_suggests_a_category_for_uncategorised_products(shop: tuple[ShopLens, Path]) -> None:
    app, _ = shop
    report = audit(app)
    suggestion = {s.sku: s for s in report.category_suggestions}["BLANK"]
    assert suggestion.category in CATEGORIES
    assert 0.0 < suggestion.confidence <= 1.0
    assert {s.sku for s in report.category_suggestions} == {"BLANK"}  # only uncategorised products
    assert any("no photo" in note for note in report.notes)  # NOPHOTO: words alone


def test_json_contract_and_report_rows(shop: tuple[ShopLens, Path]) -> None:
    app, _ = shop
    data = audit(app).as_dict()
    assert {"duplicates", "category_suggestions", "mismatches"} <= set(data)
    for d in data["duplicates"]:
        assert set(d) == {"skus", "score"} and isinstance(d["skus"], list) and isinstance(d["score"], float)
    for s in data["category_suggestions"]:
        assert set(s) == {"sku", "category", "confidence"}
    for m in data["mismatches"]:
        assert set(m) == {"sku", "listed", "suggested", "confidence", "reason"} and m["reason"]


def test_report_cells_are_spreadsheet_safe() -> None:
    from services.audit import AuditReport, Mismatch, report_rows

    report = AuditReport(mismatches=[Mismatch("=cmd|x", "Shoes", "Bags", 0.9, "=HYPERLINK()")])
    rows = report_rows(report.as_dict())
    assert rows[0]["sku"] == "'=cmd|x" and rows[0]["reason"] == "'=HYPERLINK()"
    out = io.StringIO()
    csv.DictWriter(out, fieldnames=list(rows[0])).writerows(rows)


def test_vote_mismatch_and_groups_on_plain_evidence() -> None:
    """The voting and grouping rules, on evidence written by hand."""
    listed = {
        "A": Listing("A", "Shoes", "a", 1),
        "B": Listing("B", "Shoes", "b", 1),
        "C": Listing("C", "Shoes", "c", 1),
        "D": Listing("D", "Toys", "d", 1),  # listed wrong: everything says shoes
        "E": Listing("E", None, "e", 1),
    }
    near = {"A": 0.9, "B": 0.88, "C": 0.87}
    evidence = {
        "D": Evidence(image=near, text=near, image_centroid={"Shoes": 0.8, "Toys": 0.2}, photos=1),
        "E": Evidence(image=near, text=near, image_centroid={"Shoes": 0.8, "Toys": 0.2}, photos=1),
        "A": Evidence(image={"B": 0.99, "E": 0.5}, photos=1),
        "B": Evidence(image={"A": 0.99, "C": 0.97}, photos=1),
        "C": Evidence(image={"B": 0.97}, photos=1),
    }
    assert knn_vote(near, {k: v.category for k, v in listed.items()})["Shoes"] == pytest.approx(1.0)
    suggestions, mismatches = judge(evidence, listed)
    assert [(s.sku, s.category) for s in suggestions] == [("E", "Shoes")]
    assert [(m.sku, m.listed, m.suggested) for m in mismatches] == [("D", "Toys", "Shoes")]
    assert "Shoes" in mismatches[0].reason
    groups = duplicate_groups(evidence, 0.95)
    assert [(g.skus, g.score) for g in groups] == [(["A", "B", "C"], 0.97)]


def test_votes_are_the_same_on_any_model_s_scale() -> None:
    """A model whose cosines span a third of another's (multilingual-e5's text against MobileNet's
    photos) votes the same way: temperatures follow the spread of each voter's cosines."""
    categories = {"A": "Shoes", "B": "Shoes", "C": "Toys", "D": None}

    def evidence(scale: float) -> dict[str, Evidence]:
        def at(x: float) -> float:
            return 0.8 + scale * (x - 0.8)

        return {
            "D": Evidence(
                text={"A": at(0.9), "B": at(0.7), "C": at(0.85)},
                text_centroid={"Shoes": at(0.82), "Toys": at(0.8)},
                text_zero_shot={"Shoes": at(0.84), "Toys": at(0.78)},
            ),
            "A": Evidence(text={"B": at(0.95), "C": at(0.6)}, text_centroid={"Shoes": at(0.9), "Toys": at(0.7)}),
        }

    wide, narrow = evidence(1.0), evidence(1 / 3)
    vote_wide = category_vote(wide["D"], categories, temps=temperatures(wide))
    vote_narrow = category_vote(narrow["D"], categories, temps=temperatures(narrow))
    assert vote_wide == pytest.approx(vote_narrow)
    assert max(vote_wide, key=lambda c: vote_wide[c]) == "Shoes"
    assert category_vote(wide["D"], categories, {"text_zero_shot": 1.0}, temperatures(wide))["Shoes"] > 0.5


def test_accepting_writes_sql_and_payloads_without_embedding(
    tmp_path: Path, tiny_clip_dir: Path, shop: tuple[ShopLens, Path]
) -> None:
    _, catalog = shop
    app = ShopLens(settings_for(tmp_path / "home", tiny_clip_dir))
    try:
        ingestor_for(app).ingest(load_catalog(str(catalog)))
        auditor = Auditor(app)
        suggested = {s.sku: s.category for s in auditor.report().category_suggestions}["BLANK"]
        accepted = auditor.accept(skus=["BLANK", "SKU-0001", "NOSUCH"])
        assert accepted.changed == {"BLANK": suggested}
        assert set(accepted.skipped) == {"SKU-0001", "NOSUCH"}
        product = app.catalog.get_product("BLANK")
        assert product is not None and product.category == suggested
        assert product.synced_state == desired_state(product, app.vectors.sync_key)
        points = app.vectors.points_for_skus(["BLANK"], with_vectors=False)
        assert {p[1]["kind"] for p in points} == {IMAGE, TEXT}
        assert all(payload["category"] == suggested for _, payload, _ in points)
        hits = app.vectors.backend.scroll(PointFilter(kind=TEXT, categories=(suggested,), skus=("BLANK",)), False)
        assert sum(len(batch) for batch in hits) == 1  # filterable by its new category
        assert "BLANK" not in {s.sku for s in auditor.report().category_suggestions}
        # the next ingest of the same feed finds nothing to embed and keeps the accepted category
        again = ingestor_for(app).ingest(load_catalog(str(catalog)))
        assert again.counts.images_embedded == 0 and again.counts.texts_embedded == 0
        kept = app.catalog.get_product("BLANK")
        assert kept is not None and kept.category == suggested
    finally:
        app.close()


def test_accept_above_a_confidence(tmp_path: Path, tiny_clip_dir: Path, shop: tuple[ShopLens, Path]) -> None:
    _, catalog = shop
    app = ShopLens(settings_for(tmp_path / "home", tiny_clip_dir))
    try:
        ingestor_for(app).ingest(load_catalog(str(catalog)))
        auditor = Auditor(app)
        assert auditor.accept(min_confidence=1.01).changed == {}
        assert auditor.accept(min_confidence=0.0).changed.keys() == {"BLANK"}
    finally:
        app.close()


def test_empty_catalog(tmp_path: Path, tiny_clip_dir: Path) -> None:
    app = ShopLens(settings_for(tmp_path / "home", tiny_clip_dir))
    try:
        report = audit(app)
        assert report.products == 0 and not report.duplicates and not report.category_suggestions
        assert any("empty" in note for note in report.notes)
    finally:
        app.close()


def test_one_category_and_no_photos(tmp_path: Path, tiny_clip_dir: Path) -> None:
    images = tmp_path / "catalog" / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(4):
        product_photo(i).save(images / f"p{i}.jpg", "JPEG")
        rows.append(product_row(i, [f"images/p{i}.jpg"], category="Shoes"))
    rows.append(product_row(9, [], sku="NOPHOTO", image="", category=""))
    catalog = write_rows(tmp_path / "catalog" / "catalog.csv", rows)
    app = ShopLens(settings_for(tmp_path / "home", tiny_clip_dir))
    try:
        ingestor_for(app).ingest(load_catalog(str(catalog)))
        report = audit(app)
        assert any("one category" in note for note in report.notes)
        assert all(m.suggested in (None, "Shoes") for m in report.mismatches)
        assert [(s.sku, s.category) for s in report.category_suggestions] == [("NOPHOTO", "Shoes")]
    finally:
        app.close()


def test_a_model_that_cannot_load_leaves_the_stored_vectors_to_vote(tmp_path: Path, fake_dashscope) -> None:
    """The audit reads stored vectors; the category names are the only words it embeds. When the
    model cannot be reached (here: DashScope without its key), the stored vectors still vote and
    the report says what was left out."""
    from services.embedders.registry import clear_cache

    catalog = damaged_catalog(tmp_path / "catalog")
    values = {
        "home": tmp_path / "home",
        "embedder": "dashscope",
        "dashscope_base_url": fake_dashscope.base_url,
        "dashscope_requests_per_minute": 100000,
        "min_score": -1.0,
    }
    app = ShopLens(Settings(_env_file=None, **values, dashscope_api_key=fake_dashscope.api_key))
    try:
        ingestor_for(app).ingest(load_catalog(str(catalog)))
        audit(app)  # calibrates the duplicate threshold while the model answers
    finally:
        app.close()
        clear_cache()
    app = ShopLens(Settings(_env_file=None, **values, dashscope_api_key=None))
    try:
        report = audit(app)
        assert any("category names not compared" in note for note in report.notes), report.notes
        assert {s.sku for s in report.category_suggestions} == {"BLANK"}
        assert ["COPY-0003", "SKU-0003"] in [d.skus for d in report.duplicates]
    finally:
        app.close()
        clear_cache()


def test_a_store_built_by_another_embedder(tmp_path: Path, tiny_clip_dir: Path, shop: tuple[ShopLens, Path]) -> None:
    """SQL lists products, but this embedder's collection holds none of their vectors."""
    _, catalog = shop
    first = ShopLens(settings_for(tmp_path / "home", tiny_clip_dir))
    ingestor_for(first).ingest(load_catalog(str(catalog)))
    first.close()
    other = ShopLens(settings_for(tmp_path / "home", tiny_clip_dir, qdrant_collection_prefix="elsewhere"))
    try:
        with pytest.raises(AuditError, match="reindex"):
            audit(other)
    finally:
        other.close()

"""Hybrid search and the calibrated "no good match", on both vector backends.

The tiny test model has random weights: it cannot tell a sofa from noise, so these tests check
the mechanics (codes first, words matched, thresholds measured, stored, used and overridden),
and bench/relevance.py measures the quality with the offline embedder's real weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.pipeline import ingestor_for
from ingest.sources import load_catalog
from server import schemas
from server.state import run_search
from services.calibration import load_thresholds, meta_key
from services.catalog.meta import get_meta
from services.context import ShopLens
from services.lexical import cjk_grams, compact_code, lexical_query, product_codes, query_codes, query_terms
from services.search import SearchFilters, SearchRequest
from services.settings import Settings
from tests.support.catalog import product_photo, product_row, write_catalog, write_rows


@pytest.fixture(scope="module", params=["edge", "qdrant"])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path
) -> Iterator[ShopLens]:
    """A calibrated shop (no fixed min_score) of 25 products with codes, on each backend; the
    tests only read it."""
    tmp_path = tmp_path_factory.mktemp(f"relevance-{request.param}")
    settings = Settings(
        _env_file=None,
        home=tmp_path / "home",
        embedder="openclip",
        openclip_model=f"local-dir:{tiny_clip_dir}",
        vector_backend=request.param,
    )
    app = ShopLens(settings)
    folder = tmp_path / "shop"
    write_catalog(folder, 24)
    rows = [
        product_row(
            i,
            [f"images/p{i}-0.jpg"],
            sku=f"CH{i:05d}-{i % 7:02d}",
            gtin=f"40{i:011d}",
            mpn=f"MX-{i}00/B",
        )
        for i in range(24)
    ]
    rows.append(product_row(24, [], sku="ZH-1", title="真皮沙发", description="客厅用的三人沙发", gtin=""))
    ingestor_for(app).ingest(load_catalog(str(write_rows(folder / "catalog.csv", rows))))
    yield app
    app.close()


def test_codes_and_words_as_shoppers_type_them() -> None:
    assert compact_code("CH00001-12") == compact_code(" ch00001 12 ") == compact_code("Ch0000112") == "ch0000112"
    assert product_codes("CH00001-12", {"gtin": "4006381333931", "color": "red", "mpn": "AB"}) == [
        "4006381333931",
        "ch0000112",
    ]
    assert query_codes("ch00001 12 sofa") == ["ch00001", "ch0000112sofa"]
    assert query_codes("wooden stool") == []  # words, not a code
    assert query_terms("The red Sofa for 沙发套") == {"red", "sofa", "沙发", "发套"}
    assert cjk_grams("沙发套").split() == ["沙", "发", "套", "沙发", "发套"]
    assert lexical_query("ch00001 12") == "ch00001 12 ch0000112"


@pytest.mark.parametrize("typed", ["CH00007-00", "ch00007-00", "CH00007 00", "ch0000700", "4000000000007", "mx-700/b"])
def test_an_identifier_typed_in_any_form_ranks_its_product_first(shop: ShopLens, typed: str) -> None:
    response = shop.search.search(SearchRequest(text=typed, top_k=5))
    assert response.hits[0].sku == "CH00007-00" and response.hits[0].code_match, typed
    assert all(not h.code_match for h in response.hits[1:])


def test_a_product_holding_the_words_is_a_match_whatever_its_semantic_score(shop: ShopLens) -> None:
    request = SearchRequest(text="pattern 9", top_k=30, min_score=0.9999)  # nothing passes semantically
    hits = shop.search.search(request).hits
    # "pattern 9" (products 5 and 18), or "number 9" and "pattern 11" (product 9)
    expected = {f"CH{i:05d}-{i % 7:02d}" for i in range(24) if i * 7 % 13 == 9 or i == 9}
    assert {h.sku for h in hits} == expected and all(h.lexical > 0 for h in hits)
    chinese = shop.search.search(SearchRequest(text="沙发", top_k=5, min_score=0.9999)).hits
    assert [h.sku for h in chinese] == ["ZH-1"]
    three = shop.search.search(SearchRequest(text="distinctive pattern 9", top_k=30, min_score=0.9999)).hits
    assert len(three) == 24  # all but one of three words: the 24 descriptions say "distinctive … pattern"
    assert shop.search.search(SearchRequest(text="pattern qqqq", top_k=30, min_score=0.9999)).hits == []
    filtered = shop.search.search(
        SearchRequest(text="沙发", top_k=5, min_score=0.9999, filters=SearchFilters(categories=("Bags",)))
    )
    assert filtered.hits == []  # the filters hold for lexical matches too


def test_thresholds_are_calibrated_at_ingest_stored_and_used_by_default(shop: ShopLens) -> None:
    thresholds = load_thresholds(shop.catalog, shop.vectors.collection)
    assert thresholds is not None and thresholds.products == 25
    stored = get_meta(shop.catalog, meta_key(shop.vectors.collection))
    assert stored is not None and set(stored["details"]["photo"]) >= {"threshold", "nonsense_quantile", "real_quantile"}
    photo = product_photo(3000)  # the exact catalog photo of product 3
    response = shop.search.search(SearchRequest(image=photo, top_k=5))
    assert response.threshold == pytest.approx(thresholds.photo)
    assert response.hits[0].sku == "CH00003-03" and all(h.semantic >= thresholds.photo for h in response.hits)
    mixed = shop.search.search(SearchRequest(image=photo, text="zzzz", text_weight=0.25, top_k=5))
    assert mixed.threshold == pytest.approx(0.75 * thresholds.photo + 0.25 * thresholds.text)

    nothing = shop.search.search(SearchRequest(image=photo, top_k=5, min_score=1.01))
    assert nothing.hits == [] and len(nothing.closest) == 4 and nothing.closest[0].sku == "CH00003-03"
    everything = shop.search.search(SearchRequest(image=photo, top_k=30, min_score=-1.0))
    assert len(everything.hits) == 24  # every product with a photo; the override wins


def test_the_api_answers_no_good_match_with_the_closest_apart(shop: ShopLens) -> None:
    nothing = run_search(shop, schemas.SearchQuery(text="qqqq xyzzy", min_score=1.0, facets=True), None)
    assert nothing.hits == [] and nothing.closest and nothing.threshold == 1.0
    assert {f.value: f.count for f in nothing.facets["category"]} == {"Shoes": 7, "Bags": 6, "Chairs": 6, "Lamps": 6}
    code = run_search(shop, schemas.SearchQuery(text="ch00007 00"), None)
    assert code.hits[0].sku == "CH00007-00" and code.hits[0].code_match and code.hits[0].score >= code.hits[0].semantic


def test_recalibration_follows_the_catalog(settings_factory, tmp_path: Path) -> None:
    app = ShopLens(settings_factory(min_score=None))
    try:
        assert app.search.threshold(0.0) == 0.0  # an empty catalog: nothing to calibrate, nothing hidden
        catalog = write_catalog(tmp_path / "shop", 10)
        ingestor_for(app).ingest(load_catalog(str(catalog)))
        first = load_thresholds(app.catalog, app.vectors.collection)
        assert first is not None and first.products == 10
        ingestor_for(app).ingest(load_catalog(str(catalog)))  # unchanged: the same thresholds, not measured again
        assert load_thresholds(app.catalog, app.vectors.collection) == first
        ingestor_for(app).ingest(load_catalog(str(write_catalog(tmp_path / "shop", 12))))  # +20 %
        again = load_thresholds(app.catalog, app.vectors.collection)
        assert again is not None and again.products == 12
    finally:
        app.close()


def test_a_billed_embedder_is_calibrated_with_half_the_questions(
    settings_factory, tmp_path: Path, fake_dashscope
) -> None:
    """DashScope bills and rate-limits every call: calibration asks about half as many."""
    app = ShopLens(
        settings_factory(
            min_score=None,
            embedder="dashscope",
            dashscope_base_url=fake_dashscope.base_url,
            dashscope_api_key=fake_dashscope.api_key,
            dashscope_requests_per_minute=100000,
        )
    )
    try:
        ingestor_for(app).ingest(load_catalog(str(write_catalog(tmp_path / "shop", 30))))
        assert load_thresholds(app.catalog, app.vectors.collection) is not None
        before = len(fake_dashscope.requests)
        app.search.calibrate(force=True)
        asked = len(fake_dashscope.requests) - before
        # products' photos and words, half the nonsense (photos, Latin and Chinese words); one view a photo
        assert 0 < asked <= 24 + 13 + 16 + 16 + 24
    finally:
        app.close()

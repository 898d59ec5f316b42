"""Ingest → search through every embedder, and the same operations on both SQL backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from services.context import ShopLens
from services.search import SearchFilters, SearchRequest
from tests.support.catalog import read_rows, variant, write_catalog


def _photo(folder: Path, i: int) -> Image.Image:
    return Image.open(folder / "images" / f"p{i}-0.jpg").convert("RGB")


def test_dashscope_round_trip_through_the_cli(tmp_path: Path, fake_dashscope) -> None:
    """SHOPLENS_EMBEDDER=dashscope with the base URL pointed at the local fake: the whole path."""
    fake_dashscope.reset()
    shop = tmp_path / "shop"
    catalog = write_catalog(shop, 5)
    env = {
        **os.environ,
        "SHOPLENS_HOME": str(tmp_path / "home"),
        "SHOPLENS_EMBEDDER": "dashscope",
        "SHOPLENS_DASHSCOPE_BASE_URL": fake_dashscope.base_url,
        "SHOPLENS_DASHSCOPE_API_KEY": fake_dashscope.api_key,
        "SHOPLENS_DASHSCOPE_REQUESTS_PER_MINUTE": "100000",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    summary = json.loads(run("ingest", str(catalog), "--json").stdout)
    assert summary["images_embedded"] == 5 and summary["texts_embedded"] == 5
    query = tmp_path / "q.jpg"
    variant(_photo(shop, 3), 1).save(query)
    hits = json.loads(run("search", "--image", str(query), "--json").stdout)
    assert hits[0]["sku"] == "SKU-0003"
    assert fake_dashscope.api_key not in run("stats").stdout
    text = read_rows(catalog)[2]
    hits = json.loads(run("search", "--text", f"{text['title']}. {text['description']}", "--json").stdout)
    assert hits[0]["sku"] == "SKU-0002"


def test_offline_embedder_round_trip_and_query_kinds(settings_factory, tmp_path: Path) -> None:
    app = ShopLens(settings_factory(embedder="offline", database_url=f"sqlite:///{tmp_path / 'o.db'}"))
    try:
        shop = tmp_path / "shop"
        catalog = write_catalog(shop, 6)
        result = ingestor_for(app).ingest(read_catalog(catalog))
        assert result.counts.images_embedded == 6 and not result.errors
        assert app.search.search(SearchRequest(image=variant(_photo(shop, 4), 0), top_k=3)).hits[0].sku == "SKU-0004"
        row = read_rows(catalog)[5]
        text = app.search.search(SearchRequest(text=f"{row['title']}. {row['description']}", top_k=3))
        assert text.kinds == ["text->text"] and "no shared photo-text space" in text.notes[0]
        assert text.hits[0].sku == "SKU-0005"
        both = app.search.search(SearchRequest(image=_photo(shop, 1), text="Product 1", top_k=3))
        assert both.hits[0].sku == "SKU-0001" and both.kinds == ["image->image", "text->text"]
    finally:
        app.close()


def test_sqlite_and_postgres_give_the_same_results(settings_factory, postgres_url: str, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    catalog = write_catalog(shop, 8, images_per_product=2)
    answers = []
    for name, url in (("sqlite", f"sqlite:///{tmp_path / 's.db'}"), ("postgres", postgres_url)):
        app = ShopLens(settings_factory(database_url=url, home=tmp_path / f"home-{name}"))
        try:
            ingestor_for(app).ingest(read_catalog(catalog))
            runs = []
            for request in (
                SearchRequest(image=_photo(shop, 2), top_k=5),
                SearchRequest(text="Product 6", top_k=5, filters=SearchFilters(in_stock_only=True)),
                SearchRequest(image=_photo(shop, 7), text="lamp", text_weight=0.4, top_k=4, offset=1),
                SearchRequest(
                    image=_photo(shop, 0),
                    top_k=8,
                    filters=SearchFilters(min_price=15, max_price=40, brands=("Acme", "Initech")),
                ),
            ):
                runs.append(
                    [(h.sku, round(h.score, 5), h.price, h.image_source) for h in app.search.search(request).hits]
                )
            runs.append(sorted(app.catalog.facets().categories))
            answers.append(runs)
        finally:
            app.close()
    assert answers[0] == answers[1]
    assert all(answers[0][:4])  # every query returned something

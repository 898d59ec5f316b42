"""`shoplens eval` on real parts: a SQLite store, embedded Qdrant and the tiny open_clip model in
this process, and a real `shoplens serve` process for the path through the server's API.

With the tiny model every photo scores above 0.9 against every product (a product's own photo
1.0, a shopper's variant of it about 0.997, noise about 0.97) and a nonsense text about 0.2, so
a minimum score of 0.999 gives nonsense zero hits while a catalog photo still finds its product.
The settings fix the threshold here because eval only has to leave it unset for no-match rows;
what the default should be is the search service's business.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.evaluate import QueryFile, Skipped, evaluate, local_shop, read_queries, run_eval
from ingest.pipeline import ingestor_for
from ingest.readers import CatalogError, read_catalog
from server import schemas
from services.context import ShopLens
from tests.server.conftest import ROOT, Server, server  # noqa: F401 - `server` is a module-scoped fixture
from tests.support.catalog import product_photo, variant, write_catalog

PRODUCTS = 6
NONSENSE = "zxqv blorp unicorn spaceship"
MIN_SCORE = 0.999


@pytest.fixture
def shop(settings_factory, tmp_path: Path) -> Iterator[ShopLens]:
    """PRODUCTS products ingested into a SQLite store; nonsense scores under its minimum score."""
    app = ShopLens(settings_factory(database_url=f"sqlite:///{tmp_path / 'shop.db'}", min_score=MIN_SCORE))
    result = ingestor_for(app).ingest(read_catalog(write_catalog(tmp_path / "shop", PRODUCTS)))
    assert result.status == "succeeded", result.message
    yield app
    app.close()


def _queries(folder: Path, rows: list[str], header: str = "image,text,expected_sku") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "q.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_no_match_rows_are_counted_and_answered_at_the_default_minimum_score(
    shop: ShopLens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labelled rows see every score (a shopper's variant scores under the threshold yet still
    counts for recall); no-match rows get the shop's threshold, and the ones that found
    something are listed as misses with the product and score they found."""
    folder = tmp_path / "queries"
    folder.mkdir()
    for i in range(3):
        variant(product_photo(1000 * i), i).save(folder / f"v{i}.jpg")
    noise = np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    catalog_photo = tmp_path / "shop" / "images" / "p4-0.jpg"
    path = _queries(
        folder,
        [
            "v0.jpg,,SKU-0000",
            "v1.jpg,,SKU-0001",
            f",{NONSENSE},",  # line 4: nothing should match, nothing does
            "v2.jpg,,SKU-0002",
            "noise.png,,",  # line 6: nothing does
            f"{catalog_photo},,",  # line 7: a product's own photo labelled as nonsense finds it
        ],
    )
    parsed = read_queries(path)
    result = run_eval(local_shop(shop), path, parsed, 10, tmp_path / "misses.csv", tmp_path, as_json=True)

    assert (result.queries, result.recall[1], result.mrr) == (3, 1.0, 1.0)  # not thresholded
    assert (result.no_match_queries, result.no_match_empty) == (3, 2)
    [matched] = result.misses
    assert (matched["line"], matched["expected_sku"], matched["top_sku"]) == (7, "", "SKU-0004")
    assert matched["top_score"] > MIN_SCORE
    out = json.loads(capsys.readouterr().out)
    assert out["queries"] == 3 and out["no_match_queries"] == 3 and out["no_match_rate"] == pytest.approx(2 / 3, 1e-3)
    assert out["recall@1"] == out["recall@5"] == out["recall@10"] == out["mrr"] == 1.0
    report = (tmp_path / "misses.csv").read_text().splitlines()
    assert report[0] == "line,query,expected_sku,rank,top_sku,top_score" and report[1].startswith(
        f"7,{catalog_photo},,,"
    )

    run_eval(local_shop(shop), path, parsed, 10, tmp_path / "misses.csv", tmp_path, as_json=False)
    text = capsys.readouterr().out
    assert "3 queries: recall@1 1.000" in text and "3 no-match queries: 2 answered with no hits" in text
    assert "no_match_rate 0.667" in text and "line 7:" in text and "found SKU-0004 (1.000)" in text


def test_malformed_rows_are_reported_with_their_line_and_skipped(shop: ShopLens, tmp_path: Path) -> None:
    folder = tmp_path / "queries"
    folder.mkdir()
    variant(product_photo(0), 0).save(folder / "v0.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    path = _queries(
        folder,
        [
            "v0.jpg,,SKU-0000",
            ",,SKU-0001",  # 3: no query
            "corrupt.jpg,,SKU-0001",  # 4
            "missing.jpg,,SKU-0001",  # 5
            "v0.jpg,,SKU-9999",  # 6: not in the catalog
            'v0.jpg,red" shoe, big",SKU-0000',  # 7: a stray quote splits the text
            'v0.jpg,"red shoe,SKU-0000',  # 8: a quote never closed
            "v0.jpg,SKU-0000",  # 9: a field short
            f",{NONSENSE},",
        ],
    )
    parsed = read_queries(path)
    assert [s.line for s in parsed.skipped] == [3, 7, 8, 9]  # what the reader alone can tell
    result = evaluate(shop, parsed.queries, folder, skipped=parsed.skipped)
    assert (result.queries, result.recall[1], result.no_match_queries) == (1, 1.0, 1)
    assert result.errors == [
        "line 3: no image and no text",
        "line 4: image corrupt.jpg: not a recognised image format",
        "line 5: image file not found: missing.jpg",
        "line 6: expected SKU 'SKU-9999' is not in the catalog",
        "line 7: 4 fields, more than the header's 3 (a stray quote or an unquoted comma?)",
        "line 8: cannot read the row (unexpected end of data; a stray quote?)",
        "line 9: 2 fields, fewer than the header's 3 (a stray quote or an unquoted comma?)",
    ]
    assert result.as_dict()["errors"] == 7


def test_a_file_whose_rows_all_fail_in_the_search_is_one_clear_error(shop: ShopLens, tmp_path: Path) -> None:
    path = _queries(tmp_path, ["missing.jpg,,SKU-0001", ",Product 2,SKU-4242"])
    parsed = read_queries(path)
    with pytest.raises(CatalogError) as caught:
        evaluate(shop, parsed.queries, tmp_path, skipped=parsed.skipped)
    assert caught.value.message == (
        "no usable queries: every row was skipped (line 2: image file not found: missing.jpg; "
        "line 3: expected SKU 'SKU-4242' is not in the catalog)"
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("q.csv", "", "q.csv is empty: it needs a header line"),
        ("q.csv", "photo,sku\na.jpg,SKU-1\n", "q.csv: the header needs an expected_sku column and an image or text"),
        ("q.csv", "text,expected_sku\n,SKU-1\n", "no usable queries in q.csv (line 2: no image and no text)"),
        ("q.jsonl", '{"text": "x"}\n', "no usable queries in q.jsonl (line 1: no expected_sku"),
        ("q.csv", b"text,expected_sku\nCaf\xe9,\n", "q.csv is not valid UTF-8"),
    ],
)
def test_a_file_without_usable_rows_or_header_is_one_clear_error(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CatalogError, match="^" + re.escape(message)):
        read_queries(path)


def test_jsonl_rows_an_empty_or_null_sku_is_a_no_match_query(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    lines = [
        '{"image": "a.jpg", "expected_sku": "SKU-1"}',
        '{"text": "nonsense", "expected_sku": null}',
        '{"text": "nonsense", "expected_sku": ""}',
        "{not json",
        '["a.jpg", "SKU-1"]',
        '{"Text": "shoe", "Expected_SKU": 7}',
    ]
    path.write_text("\n".join(lines) + "\n")
    parsed = read_queries(path)
    assert [(q.line, q.expected_sku, q.image, q.text) for q in parsed.queries] == [
        (1, "SKU-1", "a.jpg", None),
        (2, "", None, "nonsense"),
        (3, "", None, "nonsense"),
        (6, "7", None, "shoe"),
    ]
    assert parsed.skipped == [
        Skipped(4, "not valid JSON (Expecting property name enclosed in double quotes)"),
        Skipped(5, "not a JSON object"),
    ]
    assert isinstance(parsed, QueryFile)


def _cli(running: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """`shoplens ARGS` in another process of the server's home; says which heavy modules it loaded."""
    code = (
        "import sys, json; from cli.main import main; rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'open_clip', 'qdrant_client', 'qdrant_edge', 'sqlalchemy') if m in "
        "sys.modules]; print('MODULES ' + json.dumps(heavy), file=sys.stderr); sys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=running.env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_eval_goes_through_a_running_server(server: Server, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    """The server holds the stores, so eval asks its API (photos uploaded as a shopper's would be)
    instead of failing to open them; it loads no model and no store of its own."""
    images = server.catalog.parent / "images"
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    path = _queries(
        tmp_path,
        [
            *(f"{images / f'p{i}-0.jpg'},,SKU-{i:04d}" for i in range(3)),
            f",{NONSENSE},",  # line 5
            "corrupt.jpg,,SKU-0001",  # 6
            f"{images / 'p1-0.jpg'},,NOT-A-SKU",  # 7
            'x.jpg,a"b,c,SKU-0001',  # 8
        ],
    )
    proc = _cli(server, "eval", str(path), "--json", "--report", str(tmp_path / "misses.csv"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["queries"], out["recall@1"], out["mrr"], out["no_match_queries"], out["errors"]) == (3, 1.0, 1.0, 1, 3)
    with server.client() as client:  # the server's own default threshold decides a no-match row
        found = client.search(schemas.SearchQuery(text=NONSENSE, top_k=1)).hits
    assert out["no_match_rate"] == (0.0 if found else 1.0) and out["misses"] == len(found)
    assert f"evaluating through the server {server.url}" in proc.stderr
    assert "line 6: image corrupt.jpg: not a recognised image format" in proc.stderr
    assert "line 7: expected SKU 'NOT-A-SKU' is not in the catalog" in proc.stderr
    assert "line 8: 4 fields, more than the header's 3" in proc.stderr
    assert "MODULES []" in proc.stderr

    (tmp_path / "bad.csv").write_text("photo,sku\na.jpg,SKU-1\n")
    bad = _cli(server, "eval", str(tmp_path / "bad.csv"))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines()[0] == (
        "shoplens: error: bad.csv: the header needs an expected_sku column and an image or text column"
        " (found: photo, sku)"
    )

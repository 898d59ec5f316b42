"""The storefront page, driven in-process by Streamlit's AppTest, as a client of a real server
process (the module's `shop`: a catalog ingested through the API)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.server_process import ServerProcess, closed_port, server_env, start_server
from tests.ui.conftest import STOREFRONT, Shop, copy_home, english_left, pages_use, png_bytes, shop_words, texts

TIMEOUT = 60
KINDS = ["shoe", "bag", "chair", "lamp"] * 2  # the synthetic catalog's products 0-7; product i costs 10 + 5 i


def open_storefront() -> AppTest:
    at = AppTest.from_file(STOREFRONT, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, data: bytes, name: str = "query.jpg", mime: str = "image/jpeg") -> AppTest:
    at.file_uploader[0].set_value((name, data, mime))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def facet(at: AppTest, label: str):
    """The sidebar's Category or Brand list (its widget key changes with its counts)."""
    return next(m for m in at.sidebar.multiselect if m.label == label)


def photo_shown_back(at: AppTest) -> str | None:
    """The name of the photo the search box shows as in use, if any."""
    try:
        preview = at.get_by_key("preview")
    except KeyError:
        return None
    captions = [c.value for c in preview.caption if c.value.startswith("Your photo · ")]
    return captions[0].removeprefix("Your photo · ").replace("\\", "") if captions else None


def result_titles(at: AppTest) -> list[str]:
    """Titles of the result cards, in order (each card's title is a bold Markdown line)."""
    try:
        results = at.get_by_key("results")
    except KeyError:
        return []
    return [m.value.strip("*").replace("\\", "") for m in results.markdown if m.value.startswith("**")]


def test_first_visit_shows_the_shop_and_how_to_start(shop: Shop) -> None:
    at = open_storefront()
    shown = texts(at)
    assert "Upload a photo (or type a few words)" in shown
    assert "In the shop" in shown
    assert "Product 0 shoe" in shown
    assert "openclip" in shown and "8 products, 8 photos" in shown  # footer: embedder and catalog size
    # every list with its product count (8 products: 2 of each category; brands 3, 3, 2)
    assert facet(at, "Category").options == ["Bags (2)", "Chairs (2)", "Lamps (2)", "Shoes (2)"]
    assert facet(at, "Brand").options == ["Acme (3)", "Globex (3)", "Initech (2)"]
    assert not photo_shown_back(at)
    assert len(at.image) == 8  # every product's photo, fetched as a thumbnail from the API


def test_category_and_brand_counts_follow_each_other(shop: Shop) -> None:
    at = open_storefront()
    facet(at, "Category").set_value(["Shoes"]).run()  # products 0 and 4: Acme, Globex
    assert not at.exception
    assert facet(at, "Brand").options == ["Acme (1)", "Globex (1)"]  # Initech makes no shoes
    facet(at, "Brand").set_value(["Acme"]).run()  # Acme: products 0 (shoe), 3 (lamp), 6 (chair)
    assert facet(at, "Category").options == ["Chairs (1)", "Lamps (1)", "Shoes (1)"]
    assert facet(at, "Category").value == ["Shoes"]  # the choice survives its new count
    assert facet(at, "Brand").value == ["Acme"]
    facet(at, "Category").set_value(["Chairs", "Shoes"]).run()
    assert facet(at, "Brand").options == ["Acme (2)", "Globex (1)", "Initech (1)"]
    assert facet(at, "Brand").value == ["Acme"]
    facet(at, "Category").set_value(["Chairs"]).run()  # chairs 2 (Initech) and 6 (Acme)
    assert facet(at, "Brand").options == ["Acme (1)", "Initech (1)"]
    at.sidebar.checkbox(key="f_in_stock").check().run()  # product 6 is out of stock
    assert facet(at, "Brand").options == ["Acme (0)", "Initech (1)"]  # a chosen brand stays, even at 0
    at.sidebar.button(key="clear_filters").click().run()
    assert facet(at, "Category").value == [] and facet(at, "Brand").value == []
    assert not at.sidebar.checkbox(key="f_in_stock").value


def test_search_by_photo_finds_the_product_first(shop: Shop) -> None:
    at = upload(open_storefront(), shop.photo(3))
    titles = result_titles(at)
    assert titles[0] == "Product 3 lamp"
    shown = texts(at)
    assert "matching products" in shown
    assert re.search(r"\bin \d+ ms\b", shown)
    assert photo_shown_back(at) == "query.jpg"  # the query photo is shown back, small (one more image)
    assert len(at.image) == len(titles) + 1


def test_filters_change_the_results(shop: Shop) -> None:
    at = upload(open_storefront(), shop.photo(3))  # product 3 is a lamp, out of stock
    assert result_titles(at)[0] == "Product 3 lamp"
    facet(at, "Category").set_value(["Shoes"]).run()
    titles = result_titles(at)
    assert titles and all(t.endswith("shoe") for t in titles)
    assert "Product 3 lamp" not in titles
    facet(at, "Category").set_value([]).run()
    at.sidebar.checkbox(key="f_in_stock").check().run()
    titles = result_titles(at)
    # in the synthetic catalog products 0, 3 and 6 are out of stock
    assert titles and not {"Product 0 shoe", "Product 3 lamp", "Product 6 chair"} & set(titles)
    at.sidebar.checkbox(key="f_in_stock").uncheck().run()
    at.sidebar.number_input(key="f_min_price").set_value(10).run()  # typed, to the cent
    at.sidebar.number_input(key="f_max_price").set_value(20).run()  # prices 10, 15, 20 (bounds included)
    assert sorted(result_titles(at)) == ["Product 0 shoe", "Product 1 bag", "Product 2 chair"]
    at.sidebar.number_input(key="f_max_price").set_value(19.99).run()
    assert sorted(result_titles(at)) == ["Product 0 shoe", "Product 1 bag"]
    at.sidebar.number_input(key="f_min_price").set_value(None).run()  # emptied: no lower bound
    at.sidebar.number_input(key="f_max_price").set_value(12.5).run()
    assert result_titles(at) == ["Product 0 shoe"]
    at.sidebar.number_input(key="f_min_price").set_value(40).run()  # above the max: the two are swapped
    assert sorted(result_titles(at)) == [
        f"Product {i} {kind}" for i, kind in enumerate(KINDS) if 12.5 <= 10 + 5 * i <= 40
    ]
    assert "min price was above the max price" in "\n".join(c.value for c in at.sidebar.caption)


def test_minimum_score_gives_a_clear_no_match_message(shop: Shop) -> None:
    at = upload(open_storefront(), png_bytes(424242), "other.png", "image/png")
    at.sidebar.slider(key="f_min_score").set_value(0.999).run()
    assert not at.exception
    assert "No good match" in texts(at) and "matching product" not in texts(at)
    closest = [t for t in result_titles(at) if not t.startswith("No good match")]
    # the nearest products, under their own heading, as what they are
    assert 1 <= len(closest) <= 4 and "Closest in the shop (not good matches)" in texts(at)


def test_photo_and_words_show_the_weight_slider(shop: Shop) -> None:
    at = upload(open_storefront(), shop.photo(2))
    assert not [s for s in at.slider if s.key == "text_weight"]
    at.text_input(key="query_text").input("but in blue").run()
    assert not at.exception
    assert at.slider(key="text_weight").value == 0.5
    at.slider(key="text_weight").set_value(0.2).run()
    assert result_titles(at)[0] == "Product 2 chair"


def test_camera_is_behind_a_toggle(shop: Shop) -> None:
    at = open_storefront()
    assert not at.camera_input
    at.toggle(key="use_camera").set_value(True).run()
    assert not at.exception
    assert len(at.camera_input) == 1
    at.camera_input[0].set_value(("camera.jpg", shop.photo(5), "image/jpeg")).run()
    assert result_titles(at)[0] == "Product 5 bag"


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("broken.jpg", b"\xff\xd8\xff\xe0 definitely not a JPEG", "couldn't use"),
        ("notes.png", b"hello, I am text", "not a recognised image format"),
        ("empty.webp", b"", "couldn't use"),
    ],
)
def test_unusable_uploads_get_a_friendly_message(shop: Shop, name: str, data: bytes, expected: str) -> None:
    at = upload(open_storefront(), data, name)
    assert not at.exception
    assert [e for e in at.error if expected in e.value]
    assert result_titles(at) == []


def test_gif_is_refused_even_if_the_browser_let_it_through(shop: Shop) -> None:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(out, "GIF")
    at = upload(open_storefront(), out.getvalue(), "anim.jpg")
    assert [e for e in at.error if "GIF photos are not supported" in e.value]


def test_oversize_photo_is_refused_with_the_limit(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPLENS_MAX_IMAGE_BYTES", "2048")
    at = upload(open_storefront(), shop.photo(1))
    assert [e for e in at.error if "limit" in e.value and "smaller photo" in e.value]
    assert result_titles(at) == []


def test_product_page_shows_details_and_more_like_this(shop: Shop) -> None:
    at = upload(open_storefront(), shop.photo(4))
    at.text_input(key="query_text").input("shoe").run()
    at.slider(key="text_weight").set_value(0.0).run()  # only the photo counts
    at.button(key="hit-SKU-0004").click().run()
    assert at.query_params["sku"] == ["SKU-0004"] or at.query_params["sku"] == "SKU-0004"
    shown = texts(at)
    assert "Product 4 shoe" in shown
    assert "A distinctive item number 4" in shown
    assert "More like this" in shown
    assert "- Color: **green**" in shown  # the catalog's extra columns become details
    similar = [b.key for b in at.button if b.key and b.key.startswith("similar-")]
    assert similar and "similar-SKU-0004" not in similar
    at.button(key="back").click().run()
    assert "sku" not in at.query_params
    # the shopper's photo, words and weight survive the visit to the product page
    assert at.text_input(key="query_text").value == "shoe"
    assert at.slider(key="text_weight").value == 0.0
    assert photo_shown_back(at) == "query.jpg"
    assert result_titles(at)[0] == "Product 4 shoe"
    at.button(key="clear_photo").click().run()
    assert not photo_shown_back(at)
    assert at.file_uploader[0].value is None
    assert result_titles(at)  # the words alone still search


def test_unknown_product_link_is_explained(shop: Shop) -> None:
    at = AppTest.from_file(STOREFRONT, default_timeout=TIMEOUT)
    at.query_params["sku"] = "NOPE-1"
    at.run()
    assert not at.exception
    assert "no product with SKU 'NOPE-1'" in texts(at)


def test_empty_catalog_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shop: Shop, empty_server: ServerProcess
) -> None:
    pages_use(monkeypatch, empty_server.url, tmp_path / "pages-home")
    at = open_storefront()
    assert "catalog is empty" in texts(at)
    assert "0 products, 0 photos" in texts(at)
    assert not at.file_uploader


def test_an_index_built_for_another_model_is_explained(
    shop: Shop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openclip_env: dict[str, str],
) -> None:
    """Another server over the same catalog, whose vector collection is empty (as after a model change)."""
    home = copy_home(shop.home, tmp_path / "home")
    other = start_server(tmp_path, server_env(openclip_env, home, SHOPLENS_QDRANT_COLLECTION_PREFIX="elsewhere"))
    try:
        pages_use(monkeypatch, other.url, tmp_path / "pages-home")
        at = open_storefront()
        assert [w for w in at.warning if "shoplens reindex" in w.value]
        assert "In the shop" in texts(at)  # the shop is still shown
    finally:
        other.stop()


def test_a_server_that_does_not_answer_is_explained(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages_use(monkeypatch, f"http://127.0.0.1:{closed_port()}", tmp_path / "pages-home")
    at = open_storefront()
    assert not at.exception
    assert [e for e in at.error if "The ShopLens server is not running: start it with `shoplens serve`" in e.value]
    assert "cannot reach" in texts(at)  # and what was tried
    assert not at.file_uploader


def test_no_server_at_all_is_explained(shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pages_use(monkeypatch, None, tmp_path / "pages-home")  # no URL, no server.json in this home
    at = open_storefront()
    assert not at.exception
    assert [e for e in at.error if "The ShopLens server is not running" in e.value]


def test_the_storefront_only_reads(shop: Shop) -> None:
    """Searching, browsing and product pages never ingest: the fixture's run is the only one."""
    at = upload(open_storefront(), shop.photo(1))
    at.button(key="hit-SKU-0001").click().run()
    assert not at.exception
    assert [r.trigger for r in shop.client(admin=True).runs()] == ["api"]


def test_the_pages_are_only_clients(shop: Shop, tmp_path: Path) -> None:
    """Both pages, run in a fresh interpreter, import no store, no model and no server internals."""
    import os
    import subprocess
    import sys

    from tests.ui.conftest import ADMIN, ROOT

    script = f"""
import sys
from streamlit.testing.v1 import AppTest
shop = AppTest.from_file({STOREFRONT!r}, default_timeout=60).run()
assert not shop.exception and "In the shop" in [s.value for s in shop.subheader], shop
admin = AppTest.from_file({ADMIN!r}, default_timeout=60).run()
assert not admin.exception and admin.text_input, admin
forbidden = ("torch", "open_clip", "sqlalchemy", "qdrant_client", "fastapi", "services.context", "services.search",
             "services.catalog", "services.vectors", "server.admin", "server.state", "server.app", "ingest")
print(sorted(m for m in sys.modules if m in forbidden or m.startswith(tuple(f + "." for f in forbidden))))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLENS_")}
    env |= {"SHOPLENS_SERVER_URL": shop.url, "SHOPLENS_HOME": str(tmp_path / "pages-home")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_prices_show_their_currency_else_the_shop_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.state import format_price

    monkeypatch.delenv("SHOPLENS_CURRENCY", raising=False)
    assert format_price(18.99, None) == "18.99"  # neither the row nor the shop names one: the bare number
    assert format_price(1299, "EUR") == "€1,299.00"
    assert format_price(1.25, "kwd") == "KWD1.250"  # three minor digits
    assert format_price(None, "EUR") == "price on request"
    monkeypatch.setenv("SHOPLENS_CURRENCY", "usd")
    assert format_price(18.99, None) == "$18.99"
    assert format_price(18.99, "EUR") == "€18.99"  # the row's own currency first
    assert format_price(18.99, None, locale="zh_CN") == "US$18.99"  # another locale: one argument


def test_a_48_megapixel_phone_photo_finds_its_product(shop: Shop) -> None:
    """The most common shopper photo today: decoded at a reduced scale by the server, not refused."""
    import io

    from PIL import Image

    big = Image.open(io.BytesIO(shop.photo(4))).resize((8064, 6048))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=70)
    at = upload(open_storefront(), buf.getvalue(), "IMG_0042.jpg")
    assert result_titles(at)[0] == "Product 4 shoe"
    assert photo_shown_back(at) == "IMG_0042.jpg"


def words_shown(at: AppTest) -> str:
    """The page's text and its widgets' labels, placeholders and help (Markdown source: icons by name)."""
    parts = [texts(at)]
    for kind in ("button", "text_input", "number_input", "slider", "toggle", "checkbox", "multiselect", "expander"):
        for widget in getattr(at, kind):
            parts += [str(getattr(widget, name, "") or "") for name in ("label", "placeholder", "help")]
    return re.sub(r":material/\w+:", " ", "\n".join(parts))  # an icon's name is no word


def test_the_storefront_in_chinese(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every state a shopper meets, in Chinese: the first visit, results, no match, a product."""
    monkeypatch.setenv("SHOPLENS_UI_LANGUAGE", "zh")
    data = shop_words(shop.client())
    at = open_storefront()
    assert "店内商品" in texts(at) and "商品目录：8 件商品，8 张照片" in texts(at)
    assert facet(at, "分类").options == ["Bags (2)", "Chairs (2)", "Lamps (2)", "Shoes (2)"]
    assert english_left(words_shown(at), data) == [], words_shown(at)
    at = upload(at, shop.photo(5), "p5.jpg")
    assert result_titles(at)[0] == "Product 5 bag" and photo_shown_back(at) is None  # its caption is Chinese
    assert "件匹配商品" in texts(at) and "你的照片 · p5.jpg" in texts(at)
    at.text_input(key="query_text").set_value("蓝色").run()  # photo and words: the weight slider
    assert at.slider(key="text_weight").label == "像这张照片，但……"
    assert english_left(words_shown(at), data) == [], words_shown(at)
    at.sidebar.slider(key="f_min_score").set_value(0.999).run()
    assert "**没有足够相似的商品。**" in texts(at)
    assert english_left(words_shown(at), data) == [], words_shown(at)
    at.query_params["sku"] = "SKU-0002"
    at.run()
    assert "货号：SKU-0002" in texts(at) and "相似商品" in texts(at) and "€20.00" in texts(at)
    assert english_left(words_shown(at), data) == [], words_shown(at)

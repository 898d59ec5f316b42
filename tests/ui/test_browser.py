"""The pages in a real browser: `shoplens serve` with its pages on free ports, Debian's Chromium
via Playwright (one browser for the module).

A phone (390 × 844) and a wide screen (1280): after a photo upload the first result is in view
without scrolling and cards share rows; typed price bounds filter; Streamlit's developer chrome
is hidden; the admin page, entered by its own URL, has the app's navigation, follows an upload's
job and counts the catalog afresh. Saves screenshots under artifacts/ (gitignored) for a person to
look at: the storefront's first screen and whole page at both widths, a product page, the admin page.
In Chinese (a second page process, set to `zh`, a client of the same server): the storefront at
both widths and the admin page show no English word of the pages' own messages, prices carry
their currency sign, and `auto` follows the browser's language; screenshots in /tmp/shots/zh_*.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.support.catalog import product_photo, product_row, read_rows, write_catalog, write_rows
from tests.support.server_process import PASSWORD, ServerProcess, free_port, running_server
from tests.ui.conftest import ROOT, english_left, shop_words

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
]
ARTIFACTS = ROOT / "artifacts"
SHOTS = Path("/tmp/shots")  # the Chinese pages' screenshots
WAIT = 60_000  # ms
PHONE = {"width": 390, "height": 844}
CARDS = ".st-key-results [class*='st-key-card-']"  # the result cards, best first


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[ServerProcess]:
    """`shoplens serve` with its pages, the catalog ingested through the API. Odd products have no
    currency in the catalog: the shop's currency (USD) is shown for them."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    base = tmp_path_factory.mktemp("browser")
    catalog = write_catalog(base / "catalog", 8)
    rows = read_rows(catalog)
    for i, row in enumerate(rows):
        if i % 2:
            row["currency"] = ""
    write_rows(catalog, rows)
    # an explicit threshold of 0 (the pages inherit it): every product of this small shop matches
    with running_server(
        base / "server", openclip_env, catalog=catalog, pages=True, SHOPLENS_CURRENCY="USD", SHOPLENS_MIN_SCORE="0"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def settled(page: Any) -> None:
    """The page run has finished (no element left over from the run before) and every photo on
    the page has loaded."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=WAIT)
    expect(page.locator("[data-testid='stElementContainer'][data-stale='true']")).to_have_count(0, timeout=WAIT)
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=WAIT)


def screenshots(page: Any, name: str, width: int, folder: Path = ARTIFACTS) -> None:
    """The first screen as the visitor sees it, then the whole page: Streamlit scrolls inside its
    main block, so the window grows to the content for the full picture. The content may still
    grow as the window does (a table laid out late), so the window grows until it holds it all."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    settled(page)
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"{name}-{width}-first-screen.png"))
    viewport = page.viewport_size
    for _attempt in range(5):
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
        page.set_viewport_size({"width": width, "height": max(viewport["height"], int(height) + 60)})
        try:
            page.wait_for_function(
                "() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight <= window.innerHeight + 1",
                timeout=5_000,
            )
            break
        except PlaywrightTimeout:
            continue
    else:
        raise AssertionError(f"{name}: the page kept growing past the window")
    settled(page)
    page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size(viewport)


def upload_photo(page: Any, served: ServerProcess, product: int) -> Any:
    """A shopper's upload of a product's own photo; returns the result cards once they show."""
    from playwright.sync_api import expect

    assert served.catalog is not None
    uploader = page.get_by_test_id("stFileUploader")
    expect(uploader).to_be_visible(timeout=WAIT)
    uploader.locator('input[type="file"]').set_input_files(str(served.catalog.parent / "images" / f"p{product}-0.jpg"))
    expect(page.locator(".st-key-results").get_by_text("matching products")).to_be_visible(timeout=WAIT)
    settled(page)
    return page.locator(CARDS)


def box(locator: Any) -> dict[str, float]:
    found = locator.bounding_box()
    assert found is not None, locator
    return found


def test_on_a_phone_the_first_results_show_without_scrolling(served: ServerProcess, browser: Any) -> None:
    from playwright.sync_api import expect

    assert served.pages_url is not None
    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page.goto(served.pages_url)
        expect(page.get_by_test_id("stMainMenu")).to_be_visible(timeout=WAIT)  # the toolbar is drawn ...
        expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)  # ... without Streamlit's Deploy
        for name in ("Shop", "Admin"):  # the app's own navigation, not folded into the sidebar
            link = page.get_by_role("link", name=name)
            expect(link).to_be_in_viewport()
        cards = upload_photo(page, served, 5)
        first, second = cards.nth(0), cards.nth(1)
        expect(first).to_contain_text("Product 5 bag")
        expect(first).to_contain_text("$35.00")  # no currency in its row: the shop's, formatted
        expect(first).to_contain_text("match 1.00")
        a, b = box(first), box(second)
        assert a["x"] >= 0 and a["y"] >= 0, a
        assert a["x"] + a["width"] <= PHONE["width"] and a["y"] + a["height"] <= PHONE["height"], a  # no scrolling
        assert b["y"] == pytest.approx(a["y"], abs=1) and b["x"] >= a["x"] + a["width"], (a, b)  # one row
        assert b["x"] + b["width"] <= PHONE["width"], b
        expect(page.get_by_text("Your photo · p5-0.jpg")).to_be_in_viewport()  # shown back, small
        expect(page.get_by_text("Catalog: 8 products, 8 photos")).to_be_attached()
        screenshots(page, "storefront", PHONE["width"])

        first.get_by_role("button", name="View product").click()
        expect(page.get_by_role("heading", name="Product 5 bag")).to_be_visible(timeout=WAIT)
        expect(page.get_by_text("SKU SKU-0005")).to_be_visible()
        expect(page.get_by_role("button", name="View product")).to_have_count(7, timeout=WAIT)  # the others
        screenshots(page, "product", PHONE["width"])

        page.get_by_role("button", name="← Back to results").click()
        # back: the photo in use is still the one shown, the picker offers another (never a stale file)
        expect(page.get_by_text("Your photo · p5-0.jpg")).to_be_visible(timeout=WAIT)
        expect(page.locator(CARDS).first).to_contain_text("Product 5 bag", timeout=WAIT)
        page.get_by_text("Use another photo").click()
        picker = page.get_by_test_id("stFileUploader")
        expect(picker).to_be_visible()
        picker.locator('input[type="file"]').set_input_files(str(served.catalog.parent / "images" / "p3-0.jpg"))
        expect(page.get_by_text("Your photo · p3-0.jpg")).to_be_visible(timeout=WAIT)
        expect(page.locator(CARDS).first).to_contain_text("Product 3 lamp", timeout=WAIT)
    finally:
        page.close()


def test_on_a_wide_screen_cards_fill_rows_and_typed_prices_filter(served: ServerProcess, browser: Any) -> None:
    from playwright.sync_api import expect

    assert served.pages_url is not None
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(served.pages_url)
        expect(page.get_by_text("In the shop", exact=True)).to_be_visible(timeout=WAIT)
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(8, timeout=WAIT)  # thumbnails from the API
        cards = upload_photo(page, served, 5)
        expect(cards).to_have_count(8)
        rows = [box(cards.nth(i))["y"] for i in range(8)]
        assert rows[:4] == pytest.approx([rows[0]] * 4, abs=1) and rows[4] > rows[0] + 100, rows  # four a row
        assert box(cards.nth(0))["y"] + box(cards.nth(0))["height"] <= 900  # the first row in view
        screenshots(page, "storefront", 1280)

        sidebar = page.get_by_test_id("stSidebar")
        lowest = sidebar.get_by_label("Min price ($)")
        lowest.fill("15")
        lowest.press("Enter")
        expect(page.get_by_text("7 matching products")).to_be_visible(timeout=WAIT)  # 15, 20, … 45
        highest = sidebar.get_by_label("Max price ($)")
        highest.fill("25")
        highest.press("Enter")
        expect(page.get_by_text("3 matching products")).to_be_visible(timeout=WAIT)
        settled(page)
        expect(cards).to_have_count(3)
        titles = sorted(cards.nth(i).locator("strong").inner_text() for i in range(3))
        assert titles == ["Product 1 bag", "Product 2 chair", "Product 3 lamp"]
        expect(page.locator(".st-key-results")).to_contain_text("$15.00–$25.00")  # the filters in force, said
        expect(cards.filter(has_text="Product 2 chair")).to_contain_text("€20.00")  # its own currency
        highest.fill("15")
        highest.press("Enter")
        expect(page.get_by_text("1 matching product", exact=True)).to_be_visible(timeout=WAIT)  # bounds included
    finally:
        page.close()


def test_admin_by_its_own_url_follows_an_upload_to_its_end(served: ServerProcess, browser: Any, tmp_path: Path) -> None:
    """Entered by its URL, the admin page has the app's navigation (not Streamlit's automatic
    sidebar); a running job's progress refreshes itself (a fragment polling every second) until
    the summary shows and the header counts the new products, without a click; the history fits."""
    from playwright.sync_api import expect

    rows = [product_row(i, [f"b{i}.jpg"], sku=f"BR-{i:03d}", title=f"Browser thing {i}") for i in range(40, 44)]
    catalog = tmp_path / "browser.csv"
    with catalog.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    images = tmp_path / "images.zip"
    with zipfile.ZipFile(images, "w") as zf:
        for i in range(40, 44):
            out = io.BytesIO()
            product_photo(80_000 + i).save(out, "JPEG", quality=90)
            zf.writestr(f"b{i}.jpg", out.getvalue())

    assert served.pages_url is not None
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{served.pages_url}/admin")
        expect(page.get_by_label("Admin password")).to_be_visible(timeout=WAIT)
        expect(page.get_by_role("link", name="Shop")).to_be_visible()
        expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
        page.get_by_label("Admin password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Catalog: 8 products, 8 photos")).to_be_visible(timeout=WAIT)
        pickers = page.get_by_test_id("stFileUploader")
        pickers.nth(0).locator('input[type="file"]').set_input_files(str(catalog))
        expect(pickers.nth(1)).to_be_visible(timeout=WAIT)  # the ZIP picker (images: a ZIP file)
        # the run the catalog started has ended: a file given to a picker during a run can be lost
        expect(page.get_by_text("No ZIP chosen yet", exact=False)).to_be_visible(timeout=WAIT)
        settled(page)
        pickers.nth(1).locator('input[type="file"]').set_input_files(str(images))
        expect(page.get_by_text("Every row is valid and every image was found.")).to_be_visible(timeout=WAIT)
        with FileLock(str(served.home / "ingest.lock")):  # another ingest run holds the store: the job waits
            page.get_by_role("button", name="Ingest 4 products").click()
            expect(page.get_by_text("waiting for another ingest run", exact=False).first).to_be_visible(timeout=WAIT)
            screenshots(page, "admin-job-waiting", 1280)
        expect(page.get_by_text("4 new", exact=False).first).to_be_visible(timeout=WAIT)  # no click: the page polls
        expect(page.get_by_text("Catalog: 12 products, 12 photos")).to_be_visible(timeout=WAIT)
        expect(page.get_by_role("button", name="Ingest 4 products")).to_have_count(0)  # not twice
        screenshots(page, "admin", 1280)
        page.get_by_role("tab", name="Ingest runs").click()
        grid = page.locator(".st-key-runs .dvn-scroller")
        expect(grid).to_have_count(1, timeout=WAIT)
        width, visible = grid.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert width <= visible, (width, visible)  # every column in view: nothing scrolls sideways
        screenshots(page, "admin-runs", 1280)
    finally:
        page.close()
    assert served.client().product("BR-041").title == "Browser thing 41"


# -- the pages in Chinese ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zh_pages(served: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same pages in a second Streamlit process (a moment to start, no second server), set to
    Chinese and to a shop currency in yuan, as a shop in China would set them."""
    from cli.serve import streamlit_command

    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    if not fonts.strip():  # Chromium would draw every Chinese character as a box: screenshots worth nothing
        pytest.fail("no Chinese font for Chromium: apt-get install -y fonts-noto-cjk")
    port = free_port()
    base = tmp_path_factory.mktemp("zh-pages")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLENS_")} | {
        "SHOPLENS_SERVER_URL": served.url,
        "SHOPLENS_HOME": str(base / "home"),
        "SHOPLENS_UI_LANGUAGE": "zh",
        "SHOPLENS_CURRENCY": "CNY",
        "SHOPLENS_MIN_SCORE": "0",
    }
    with (base / "pages.log").open("wb") as log:
        process = subprocess.Popen(
            streamlit_command(port, "127.0.0.1"), env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_stcore/health", process, base / "pages.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{log.read_text(errors='replace')}")


# the words a page shows: its visible text nodes (not an icon's name, such as "upload", nor code), the
# placeholders of empty boxes, and the words a style rule puts in place of Streamlit's own
# (`ui.state.uploader_words`)
SHOWN_TEXT = """() => {
  const app = document.querySelector('[data-testid="stApp"]'), out = [];
  const walk = document.createTreeWalker(app, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const parent = walk.currentNode.parentElement;
    // icons are names, not words; code (a column, a command) is never translated
    if (!parent || parent.closest('[translate="no"], code, style, script')) continue;
    if (getComputedStyle(parent).fontSize === '0px') continue;  // replaced by a style rule
    if (parent.checkVisibility({visibilityProperty: true})) out.push(walk.currentNode.textContent);
  }
  for (const input of app.querySelectorAll('input[placeholder], textarea[placeholder]')) {
    if (!input.value && input.checkVisibility()) out.push(input.placeholder);
  }
  for (const element of app.querySelectorAll('*')) {
    const content = getComputedStyle(element, '::after').content;
    if (content.startsWith('"') && element.checkVisibility()) out.push(JSON.parse(content));
  }
  return out.join('\\n');
}"""


def chrome_text(page: Any) -> str:
    return page.evaluate(SHOWN_TEXT)


@pytest.mark.parametrize(("viewport", "mobile"), [(PHONE, True), ({"width": 1280, "height": 800}, False)])
def test_the_storefront_in_chinese(
    served: ServerProcess, zh_pages: str, browser: Any, viewport: dict[str, int], mobile: bool
) -> None:
    """Searched by words: every word of the page is Chinese but the shop's own data, prices carry
    their currency sign (the shop's yuan for rows without a currency), nothing runs off a phone."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport=viewport, is_mobile=mobile, has_touch=mobile)
    try:
        page.goto(zh_pages)
        expect(page.get_by_text("店内商品", exact=True)).to_be_visible(timeout=WAIT)
        for name in ("商店", "管理"):
            expect(page.get_by_role("link", name=name)).to_be_in_viewport()
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(8, timeout=WAIT)  # the showcase, drawn
        expect(page.get_by_test_id("stFileUploaderDropzone")).to_be_visible()
        settled(page)
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f"zh_storefront-{viewport['width']}-first-visit.png"))
        assert english_left(chrome_text(page), shop_words(served.client())) == [], chrome_text(page)
        box_ = page.get_by_label("描述一下（可选）")
        box_.fill("bag")
        box_.press("Enter")
        head = page.locator(".st-key-results_head")
        expect(head).to_contain_text("件匹配商品", timeout=WAIT)
        settled(page)
        cards = page.locator(CARDS)
        expect(cards.first).to_contain_text("匹配度")
        prices = [cards.nth(i).get_by_test_id("stCaptionContainer").first.inner_text() for i in range(cards.count())]
        assert prices and all(p.startswith(("¥", "€")) for p in prices), prices
        assert any(p.startswith("¥35.00") for p in prices), prices  # no currency in its row: the shop's yuan
        shown = chrome_text(page)
        assert "上传" in shown and "单个文件不超过 20MB • JPG, PNG, WEBP" in shown  # Streamlit's own words too
        assert english_left(shown, shop_words(served.client())) == [], shown
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= viewport["width"], width  # nothing wider than the screen
        screenshots(page, "zh_storefront", viewport["width"], SHOTS)
        if not mobile:  # the sidebar's filters, unfolded on a wide screen
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_label("最低价（¥）")).to_be_visible()
            expect(sidebar.get_by_placeholder("全部分类")).to_be_visible()
            assert "全部品牌" in chrome_text(page)
            cards.first.get_by_role("button", name="查看商品").click()
            expect(page.get_by_role("button", name="← 返回结果")).to_be_visible(timeout=WAIT)
            expect(page.get_by_text("相似商品", exact=True)).to_be_visible(timeout=WAIT)
            settled(page)
            shown = chrome_text(page)
            assert english_left(shown, shop_words(served.client())) == [], shown
            screenshots(page, "zh_product", viewport["width"], SHOTS)
    finally:
        page.close()


@pytest.mark.parametrize(
    ("locale", "query", "shown", "hidden"),
    [
        ("zh-CN", "", "店内商品", "In the shop"),
        ("en-US", "", "In the shop", "店内商品"),
        ("en-US", "?lang=zh", "店内商品", "In the shop"),  # a shared link asks for Chinese
    ],
)
def test_auto_follows_the_browser_language(
    served: ServerProcess, browser: Any, locale: str, query: str, shown: str, hidden: str
) -> None:
    from playwright.sync_api import expect

    assert served.pages_url is not None  # these pages say `auto`
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(served.pages_url + query)
        expect(page.get_by_text(shown, exact=True)).to_be_visible(timeout=WAIT)
        expect(page.get_by_text(hidden, exact=True)).to_have_count(0)
    finally:
        context.close()


def test_the_admin_page_in_chinese(served: ServerProcess, zh_pages: str, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{zh_pages}/admin")
        expect(page.get_by_label("管理员密码")).to_be_visible(timeout=WAIT)
        page.get_by_label("管理员密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()
        for tab in ("上传目录", "导入记录", "删除商品", "目录检查"):
            expect(page.get_by_role("tab", name=tab)).to_be_visible(timeout=WAIT)
        expect(page.get_by_role("button", name="退出登录")).to_be_visible()
        expect(page.get_by_text("商品图片")).to_be_visible()  # the radio of the upload tab
        expect(page.get_by_text("ZIP 压缩包")).to_be_visible()
        settled(page)
        shown = chrome_text(page)
        assert english_left(shown, [*shop_words(served.client()), served.url]) == [], shown
        screenshots(page, "zh_admin", 1280, SHOTS)
        page.get_by_role("tab", name="导入记录").click()
        expect(page.locator(".st-key-runs")).to_be_visible(timeout=WAIT)
        settled(page)
        screenshots(page, "zh_admin-runs", 1280, SHOTS)
    finally:
        page.close()

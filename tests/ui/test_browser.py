"""The pages in a real browser: `shoplens serve` with its pages on free ports, Debian's Chromium
via Playwright (one browser for the module).

Saves full-page screenshots under artifacts/ (gitignored) for a person to look at: the storefront
at 1280 and at 390 px wide (search results and a product page), and the admin page while an
upload's job waits and after it ended.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.support.catalog import product_photo, product_row, write_catalog
from tests.support.server_process import PASSWORD, ServerProcess, running_server
from tests.ui.conftest import ROOT

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
WAIT = 60_000  # ms


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[ServerProcess]:
    """`shoplens serve` with its pages, the catalog ingested through the API."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    base = tmp_path_factory.mktemp("browser")
    catalog = write_catalog(base / "catalog", 8)
    with running_server(base / "server", openclip_env, catalog=catalog, pages=True) as server:
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


def full_page_screenshot(page: Any, path: Path, width: int) -> None:
    """Streamlit scrolls inside its main block: grow the window to the content for a full picture."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=WAIT)  # the run has finished
    for _ in range(2):  # measure again once the window has grown
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
        page.set_viewport_size({"width": width, "height": max(800, int(height) + 60)})
        page.wait_for_timeout(300)
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


@pytest.mark.parametrize("width", [1280, 390])
def test_upload_a_photo_and_see_the_product(served: ServerProcess, browser: Any, width: int) -> None:
    from playwright.sync_api import expect

    assert served.catalog is not None and served.pages_url is not None
    photo = served.catalog.parent / "images" / "p5-0.jpg"
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(served.pages_url)
        uploader = page.get_by_test_id("stFileUploader")
        expect(uploader).to_be_visible(timeout=WAIT)
        expect(page.get_by_text("In the shop", exact=True)).to_be_visible()
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(8, timeout=WAIT)  # thumbnails from the API
        uploader.locator('input[type="file"]').set_input_files(str(photo))
        results = page.locator(".st-key-results")
        expect(results.get_by_text("matching products")).to_be_visible(timeout=WAIT)
        first_card = results.get_by_test_id("stColumn").first
        expect(first_card).to_contain_text("Product 5 bag")
        expect(first_card).to_contain_text("match score 1.00")
        expect(first_card.locator("[data-testid='stImage'] img")).to_be_visible()
        expect(page.get_by_text("Your photo")).to_be_visible()
        expect(page.get_by_text("Catalog: 8 products, 8 photos")).to_be_visible()
        full_page_screenshot(page, ARTIFACTS / f"storefront-{width}.png", width)
        first_card.get_by_role("button", name="View product").click()
        expect(page.get_by_text("More like this")).to_be_visible(timeout=WAIT)
        expect(page.get_by_role("heading", name="Product 5 bag")).to_be_visible()
        expect(page.get_by_text("SKU SKU-0005")).to_be_visible()
        expect(page.get_by_role("button", name="View product")).to_have_count(
            7, timeout=WAIT
        )  # the others, most alike first
        full_page_screenshot(page, ARTIFACTS / f"product-{width}.png", width)
    finally:
        page.close()
    # the storefront searched but never ingested: the fixture's run through the API is the only one
    assert [r.trigger for r in served.client(admin=True).runs()] == ["api"]


def test_admin_upload_is_followed_to_its_end(served: ServerProcess, browser: Any, tmp_path: Path) -> None:
    """In a browser the running job's progress refreshes itself (a fragment polling every second)
    until the summary shows and the header counts the new products, without a click."""
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
        page.get_by_label("Admin password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Catalog: 8 products, 8 photos")).to_be_visible(timeout=WAIT)
        pickers = page.get_by_test_id("stFileUploader")
        pickers.nth(0).locator('input[type="file"]').set_input_files(str(catalog))
        expect(pickers.nth(1)).to_be_visible(timeout=WAIT)  # the ZIP picker (images: a ZIP file)
        pickers.nth(1).locator('input[type="file"]').set_input_files(str(images))
        expect(page.get_by_text("Every row is valid and every image was found.")).to_be_visible(timeout=WAIT)
        with FileLock(str(served.home / "ingest.lock")):  # another ingest run holds the store: the job waits
            page.get_by_role("button", name="Ingest 4 products").click()
            expect(page.get_by_text("waiting for another ingest run", exact=False).first).to_be_visible(timeout=WAIT)
            full_page_screenshot(page, ARTIFACTS / "admin-job-running-1280.png", 1280)
        expect(page.get_by_text("4 new", exact=False).first).to_be_visible(timeout=WAIT)  # no click: the page polls
        expect(page.get_by_text("Catalog: 12 products, 12 photos")).to_be_visible(timeout=WAIT)
        expect(page.get_by_role("button", name="Ingest 4 products")).to_have_count(0)  # not twice
        full_page_screenshot(page, ARTIFACTS / "admin-1280.png", 1280)
    finally:
        page.close()
    assert served.client().product("BR-041").title == "Browser thing 41"

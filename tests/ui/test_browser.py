"""The storefront in a real browser: `streamlit run` on a free port, Debian's Chromium via Playwright.

Saves a full-page screenshot to artifacts/storefront.png (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import write_catalog
from tests.ui.conftest import ROOT, STOREFRONT, shop_env

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check",
]
SCREENSHOT = ROOT / "artifacts" / "storefront.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"streamlit did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[tuple[str, Path, Path]]:
    """A pre-ingested home (ingested by the CLI in its own process) and a storefront serving it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    base = tmp_path_factory.mktemp("browser")
    catalog = write_catalog(base / "catalog", 8)
    env = {**os.environ, **shop_env(openclip_env, base / "home"), "HF_HUB_OFFLINE": "1"}
    ingest = subprocess.run([sys.executable, "-m", "cli.main", "ingest", str(catalog)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stderr
    port = free_port()
    log = (base / "streamlit.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", STOREFRONT, "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"],
        env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, base / "home", catalog
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_upload_a_photo_and_see_the_product(served: tuple[str, Path, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, home, catalog = served
    photo = catalog.parent / "images" / "p5-0.jpg"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            uploader = page.get_by_test_id("stFileUploader")
            expect(uploader).to_be_visible(timeout=60_000)
            expect(page.get_by_text("In the shop", exact=True)).to_be_visible()
            uploader.locator('input[type="file"]').set_input_files(str(photo))
            results = page.locator(".st-key-results")
            expect(results.get_by_text("matching products")).to_be_visible(timeout=60_000)
            first_card = results.get_by_test_id("stColumn").first
            expect(first_card).to_contain_text("Product 5 bag")
            expect(first_card).to_contain_text("match score 1.00")
            expect(page.get_by_text("Your photo")).to_be_visible()
            expect(page.get_by_text("Catalog: 8 products, 8 photos")).to_be_visible()
            expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=60_000)  # the run has finished
            # Streamlit scrolls inside its main block: grow the window to the content for a full picture
            for _ in range(2):  # measure again once the window has grown
                height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
                page.set_viewport_size({"width": 1400, "height": max(900, int(height) + 60)})
                page.wait_for_timeout(300)
            page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    # the storefront searched but never ingested: the CLI's run is the only one
    with sqlite3.connect(home / "shoplens.db") as db:
        assert db.execute("select trigger from ingest_runs").fetchall() == [("cli",)]

"""The admin page, driven in-process by AppTest as a client of a real server process: the lock
(the server checks and throttles the password), bulk uploads as jobs, refusals, history, delete."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from streamlit.testing.v1 import AppTest

from ingest.readers import CATALOG_SUFFIXES
from server.client import ApiError
from tests.support.catalog import product_photo, product_row
from tests.support.server_process import ServerProcess, running_server
from tests.ui.conftest import ADMIN, PASSWORD, STOREFRONT, pages_use, texts

TIMEOUT = 60
SEED = 70_000  # photos unlike any other test's


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[ServerProcess]:
    """A server over an empty shop whose admin password is PASSWORD; the module's pages use it."""
    base = tmp_path_factory.mktemp("ui-admin")
    with running_server(base / "server", openclip_env) as server, pytest.MonkeyPatch.context() as mp:
        pages_use(mp, server.url, base / "pages-home")
        yield server


@pytest.fixture(autouse=True)
def unthrottled(admin_server: ServerProcess) -> Iterator[None]:
    """Wrong guesses cost time on the server for everyone: after a test, wait them out and log in
    rightly once, which clears the count, so the next test starts unthrottled."""
    yield
    client = admin_server.client(admin=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.runs(limit=1)
            return
        except ApiError as exc:
            if exc.status != 429 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def jpeg(i: int) -> bytes:
    out = io.BytesIO()
    product_photo(SEED + i).save(out, "JPEG", quality=92)
    return out.getvalue()


def catalog_csv(indices: list[int], image_name=lambda i: f"a{i}.jpg", **overrides) -> bytes:
    rows = [
        product_row(i, [image_name(i)], sku=f"UP-{i:03d}", title=f"Uploaded thing {i}", **overrides) for i in indices
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def zip_of(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def open_admin() -> AppTest:
    at = AppTest.from_file(ADMIN, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def log_in(at: AppTest, password: str = PASSWORD) -> AppTest:
    at.text_input(key="admin_password").input(password)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def logged_in() -> AppTest:
    at = log_in(open_admin())
    assert at.tabs, texts(at)
    return at


def picker(at: AppTest, name: str):
    """The file picker `name` of the current generation (a submitted upload gets fresh pickers)."""
    (found,) = [u for u in at.file_uploader if (u.key or "").rsplit("_", 1)[0] == name]
    return found


def choose(at: AppTest, catalog: tuple[str, bytes], images: bytes | list[tuple[str, bytes]] | None = None) -> AppTest:
    """Pick a catalog and its images (a ZIP's bytes, or image files) like an admin would."""
    picker(at, "catalog_file").set_value((catalog[0], catalog[1], "text/csv")).run()
    if isinstance(images, bytes):
        at.radio(key="images_mode").set_value("A ZIP file").run()
        picker(at, "zip_file").set_value(("images.zip", images, "application/zip")).run()
    elif images:
        at.radio(key="images_mode").set_value("Image files").run()
        picker(at, "image_files").set_value([(name, data, "image/jpeg") for name, data in images]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def until(at: AppTest, done: Callable[[AppTest], bool], timeout: float = 60) -> AppTest:
    """Run the page again (as its one-second poll does in a browser) until `done`."""
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, texts(at)
        time.sleep(0.3)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def summary_says(text: str) -> Callable[[AppTest], bool]:
    return lambda at: any(text in s.value for s in [*at.success, *at.warning])


def ingest_and_wait(at: AppTest, expected: str) -> AppTest:
    at.button(key="ingest").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return until(at, summary_says(expected))


def table(at: AppTest, key: str):
    """The table in the container `key` (problems, jobs, runs)."""
    (frame,) = [d.value for d in at.get_by_key(key).dataframe]
    return frame


def header(at: AppTest) -> str:
    (line,) = [c.value for c in at.caption if c.value.startswith("Catalog:")]
    return line


def uploaded_files(home: Path) -> list[Path]:
    return [p for p in (home / "uploads").rglob("*") if p.is_file()] if (home / "uploads").exists() else []


def product_count(server: ServerProcess) -> int:
    return server.client().health().counts.products


# -- the lock -----------------------------------------------------------------------------------
def test_admin_refuses_to_open_without_a_password(
    empty_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages_use(
        monkeypatch, empty_server.url, tmp_path / "pages-home"
    )  # a server started without SHOPLENS_ADMIN_PASSWORD
    at = log_in(open_admin(), PASSWORD)
    assert [e for e in at.error if "admin page is disabled" in e.value and "SHOPLENS_ADMIN_PASSWORD" in e.value], texts(
        at
    )
    assert not at.tabs


def test_wrong_password_is_refused_and_slows_the_next_try(admin_server: ServerProcess) -> None:
    other = open_admin()  # a second browser session, already open
    at = log_in(open_admin(), "guess")
    assert [e for e in at.error if "Wrong admin credential" in e.value and "Wait 1 s" in e.value], texts(at)
    assert not at.tabs
    time.sleep(1.2)
    at = log_in(at, "another guess")  # each wrong guess costs more
    assert [e for e in at.error if "Wrong admin credential" in e.value and "Wait 2 s" in e.value], texts(at)
    at = log_in(at, PASSWORD)  # right away: still inside the delay
    assert [e for e in at.error if "Too many wrong admin credentials" in e.value]
    assert not at.tabs
    # the server also counts guesses across sessions: the other session is held back for a moment …
    other = log_in(other, PASSWORD)
    assert [e for e in other.error if "Too many wrong admin credentials" in e.value], texts(other)
    assert not other.tabs
    time.sleep(2.2)  # … but a few seconds, never a lock-out of every admin behind the pages' one address
    other = log_in(other, PASSWORD)
    assert other.tabs, texts(other)
    assert "admin_credential" not in at.session_state


def test_right_password_opens_the_page(admin_server: ServerProcess) -> None:
    at = logged_in()
    assert [t.label for t in at.tabs] == ["Upload a catalog", "Ingest runs", "Delete a product", "Audit"]
    # the catalog picker offers what the server reads (the page, a mere client, keeps its own copy)
    assert set(picker(at, "catalog_file").proto.type) == set(CATALOG_SUFFIXES)
    assert header(at).startswith("Catalog: ") and admin_server.url in header(at)
    at.button(key="logout").click().run()
    assert not at.tabs and at.text_input(key="admin_password")
    assert "admin_credential" not in at.session_state


def test_the_audit_tab_explains_an_empty_shop(admin_server: ServerProcess) -> None:
    at = logged_in()
    shown = texts(at)
    assert "Near-duplicate listings (0)" in shown and "Category suggestions (0)" in shown
    assert "The catalog is empty: nothing to audit." in shown
    at.button(key="audit_fresh").click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_a_server_that_does_not_answer_is_explained(
    admin_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.server_process import closed_port

    pages_use(monkeypatch, f"http://127.0.0.1:{closed_port()}", tmp_path / "pages-home")
    at = open_admin()
    assert [e for e in at.error if "The ShopLens server is not running: start it with `shoplens serve`" in e.value]
    assert not at.text_input  # no login form for a server that is not there


# -- uploads ------------------------------------------------------------------------------------
def test_bulk_upload_with_a_zip_lands_and_shows_in_search(admin_server: ServerProcess) -> None:
    home = admin_server.home
    at = logged_in()
    assert header(at).startswith("Catalog: 0 products, 0 photos")
    bad_row = catalog_csv([9], price="not a price").decode().splitlines()[1]
    catalog = catalog_csv([0, 1, 2, 3]) + (bad_row + "\n").encode()
    images = zip_of(
        {f"images/a{i}.jpg": jpeg(i) for i in range(4)} | {"images/readme.txt": b"hi", "__MACOSX/images/._a0.jpg": b"x"}
    )
    choose(at, ("products.csv", catalog), images)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Rows": "5", "Rows OK": "4", "Rows with errors": "1", "Images in upload": "4"}
    problems = table(at, "problems")
    assert list(problems["sku"]) == ["UP-009"] and "not a price" in problems["message"][0]
    assert uploaded_files(home) == []  # a preview writes nothing
    assert product_count(admin_server) == 0

    ingest_and_wait(at, "4 new")
    assert at.download_button(key="report")  # the row with the bad price is in the report
    assert [data for data in at.session_state["reports"].values() if b"UP-009" in data and b"not a price" in data]
    assert product_count(admin_server) == 4
    assert header(at).startswith("Catalog: 4 products, 4 photos")  # the header is current after the ingest
    # the upload's staging folder is gone once its run has ended (its 4 photos are in the media store)
    assert uploaded_files(home) == []

    runs = table(at, "runs")
    assert runs["trigger"][0] == "admin" and runs["result"][0] == "4 new · 1 failed"

    shop = AppTest.from_file(STOREFRONT, default_timeout=TIMEOUT).run()
    shop.file_uploader[0].set_value(("mine.jpg", jpeg(2), "image/jpeg")).run()
    assert not shop.exception
    first = [m.value for m in shop.get_by_key("results").markdown if m.value.startswith("**")][0]
    assert first == "**Uploaded thing 2**"


def test_an_upload_is_a_job_that_outlives_the_tab(admin_server: ServerProcess) -> None:
    """The ingest answers at once with a job; the page follows it, a fresh visit sees it too, and
    the same upload cannot be sent twice (the pickers are new and empty)."""
    at = logged_in()
    before = product_count(admin_server)
    choose(at, ("jobs.csv", catalog_csv([30, 31])), [(f"a{i}.jpg", jpeg(i)) for i in (30, 31)])
    with FileLock(str(admin_server.home / "ingest.lock")):  # another ingest run holds the store: the job waits
        at.button(key="ingest").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert picker(at, "catalog_file").key == "catalog_file_1" and picker(at, "catalog_file").value is None
        assert not [m for m in at.metric if m.label == "Rows"] and not [b for b in at.button if b.key == "ingest"]
        until(at, lambda at: any("waiting for another ingest run" in p.text for p in at.progress))
        assert at.session_state["job_id"]
        visit = logged_in()  # another tab, say: it shows the running job and the recent ones
        assert [p for p in visit.progress if "jobs.csv" in p.text], [p.text for p in visit.progress]
        assert table(visit, "jobs")["status"][0] == "running"
    until(at, summary_says("2 new"))
    assert not at.progress
    assert {m.label: m.value for m in at.metric}["New"] == "2"
    assert header(at).startswith(f"Catalog: {before + 2} products")
    assert table(at, "jobs")["status"][0] == "succeeded"
    until(visit, lambda v: not v.progress and table(v, "jobs")["status"][0] == "succeeded")


def test_upload_as_many_image_files(admin_server: ServerProcess) -> None:
    at = logged_in()
    choose(at, ("more.jsonl", _jsonl([10, 11])), [(f"a{i}.jpg", jpeg(i)) for i in (10, 11)])
    assert {m.label: m.value for m in at.metric}["Images in upload"] == "2"
    assert [s for s in at.success if "every image was found" in s.value.lower()]
    ingest_and_wait(at, "2 new")
    assert not [b for b in at.download_button if b.key == "report"]  # no problems, no report


def _jsonl(indices: list[int]) -> bytes:
    import json

    rows = [product_row(i, [f"a{i}.jpg"], sku=f"UP-{i:03d}", title=f"Uploaded thing {i}") for i in indices]
    return "\n".join(json.dumps(r) for r in rows).encode()


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ({"images/a0.jpg": b"x", "../../evil.jpg": b"x"}, "outside the upload folder"),
        ({"/etc/cron.d/evil.jpg": b"x"}, "absolute path"),
        ({f"images/{n}.jpg": b"x" for n in range(10_001)}, "entries; the limit is"),
        ({"images/a0.jpg": bytes(25 * 2**20)}, "the limit per image"),
    ],
    ids=["traversal", "absolute", "too-many-entries", "bomb"],
)
def test_malicious_zip_is_refused_and_nothing_is_written(
    admin_server: ServerProcess, entries: dict[str, bytes], reason: str
) -> None:
    home = admin_server.home
    before = product_count(admin_server)
    files_before = uploaded_files(home)
    at = logged_in()
    choose(at, ("products.csv", catalog_csv([0])), zip_of(entries))
    assert [e for e in at.error if "Upload refused" in e.value and reason in e.value], [e.value for e in at.error]
    assert not [b for b in at.button if b.key == "ingest"]
    assert uploaded_files(home) == files_before
    assert product_count(admin_server) == before
    assert not (home.parent / "evil.jpg").exists()


def test_a_catalog_that_is_not_a_catalog_is_refused(admin_server: ServerProcess) -> None:
    at = logged_in()
    choose(at, ("products.csv", b"name,colour\nshoe,red\n"))
    assert [e for e in at.error if "missing the required column" in e.value]


# -- history and delete -------------------------------------------------------------------------
def test_delete_a_product(admin_server: ServerProcess) -> None:
    at = logged_in()
    choose(
        at,
        ("del.csv", catalog_csv([20, 21], image_name=lambda i: f"d{i}.jpg")),
        [(f"d{i}.jpg", jpeg(i)) for i in (20, 21)],
    )
    ingest_and_wait(at, "2 new")
    before = product_count(admin_server)
    assert header(at).startswith(f"Catalog: {before} products")
    points_before = admin_server.client(admin=True).stats().qdrant

    at.text_input(key="delete_sku").input("NOPE").run()
    assert [i for i in at.info if "No product with SKU 'NOPE'" in i.value]
    at.text_input(key="delete_sku").input("UP-020").run()
    assert "Uploaded thing 20" in texts(at)
    assert at.button(key="delete").disabled
    at.checkbox(key="delete_confirm").check().run()
    at.button(key="delete").click().run()
    assert not at.exception
    assert [s for s in at.success if "Deleted UP-020" in s.value]
    assert at.text_input(key="delete_sku").value == ""  # ready for the next one
    assert product_count(admin_server) == before - 1
    assert header(at).startswith(f"Catalog: {before - 1} products")  # the header is current after the delete

    client = admin_server.client(admin=True)
    with pytest.raises(ApiError) as gone:
        client.product("UP-020")
    assert gone.value.status == 404
    assert client.product("UP-021").sku == "UP-021"
    stats = client.stats()  # its vectors went with it, and only its
    assert stats.consistent
    assert stats.qdrant == {k: v - 1 for k, v in points_before.items()}


def test_progress_tells_products_done_the_rate_and_the_time_left() -> None:
    from datetime import UTC, datetime, timedelta

    from server import schemas
    from ui.admin import changes, progress_text, short_source

    started = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    running = schemas.Job.model_construct(
        status="running", finished=False, done=100, total=400, images_per_second=35.2, started_at=started, message=None
    )
    assert progress_text(running, now=started + timedelta(seconds=20)) == (
        0.25,
        "100 of 400 products (25%) · 35.2 images/s · about 60 s left",
    )
    waiting = running.model_copy(update={"done": 0, "total": 0, "message": "waiting for another ingest run"})
    assert progress_text(waiting) == (0.0, "waiting for another ingest run")
    assert progress_text(running.model_copy(update={"status": "queued"}))[1] == "queued, waiting for the job before it"
    assert short_source("upload big.csv (20260101T120000123456Z)") == "upload big.csv"
    assert short_source("https://shop.example/feeds/export.csv") == "shop.example/…/export.csv"
    assert short_source("/srv/catalogs/catalog.csv") == "catalog.csv"
    assert changes({"new": 150, "changed": 0, "failed": 2}) == "150 new · 2 failed"
    assert changes({"unchanged": 0}) == "nothing to do"

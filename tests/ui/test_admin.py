"""The admin page, driven in-process by AppTest: the lock, bulk uploads, refusals, history, delete."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.catalog import product_photo, product_row
from tests.ui.conftest import ADMIN, PASSWORD, STOREFRONT, shop_env, texts

TIMEOUT = 60
SEED = 70_000  # photos unlike any other test's


@pytest.fixture(scope="module")
def admin_home(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[Path]:
    """An empty shop whose admin password is PASSWORD; the module's environment points at it."""
    home = tmp_path_factory.mktemp("ui-admin") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in shop_env(openclip_env, home).items():
            mp.setenv(key, value)
        yield home


@pytest.fixture(autouse=True)
def fresh_throttle() -> Iterator[None]:
    from ui import state

    state.login_throttle().reset()
    yield
    state.login_throttle().reset()


def jpeg(i: int) -> bytes:
    out = io.BytesIO()
    product_photo(SEED + i).save(out, "JPEG", quality=92)
    return out.getvalue()


def catalog_csv(indices: list[int], image_name=lambda i: f"a{i}.jpg", **overrides) -> bytes:  # noqa: ANN001
    rows = [product_row(i, [image_name(i)], sku=f"UP-{i:03d}", title=f"Uploaded thing {i}", **overrides) for i in indices]
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


def table_with(at: AppTest, column: str):  # noqa: ANN201 - a pandas DataFrame
    """The one dataframe on the page that has this column."""
    (frame,) = [d.value for d in at.dataframe if column in d.value.columns]
    return frame


def uploaded_files(home: Path) -> list[Path]:
    return [p for p in (home / "uploads").rglob("*") if p.is_file()] if (home / "uploads").exists() else []


def product_count(home: Path) -> int:
    from services.catalog.store import CatalogStore

    store = CatalogStore(f"sqlite:///{home / 'shoplens.db'}")
    try:
        return store.counts()["products"]
    finally:
        store.close()


# -- the lock -----------------------------------------------------------------------------------
def test_admin_refuses_to_open_without_a_password(admin_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPLENS_ADMIN_PASSWORD")
    at = open_admin()
    assert [e for e in at.error if "admin page is disabled" in e.value]
    assert not at.text_input and not at.tabs


def test_wrong_password_is_refused_and_slows_the_next_try(admin_home: Path) -> None:
    at = log_in(open_admin(), "guess")
    assert [e for e in at.error if "Wrong password" in e.value]
    assert not at.tabs
    at = log_in(at, PASSWORD)  # right away: still inside the delay
    assert [e for e in at.error if "Too many wrong passwords" in e.value]
    assert not at.tabs


def test_wrong_guesses_from_many_sessions_lock_the_whole_process(admin_home: Path) -> None:
    from ui import state

    throttle = state.login_throttle()
    now = [1_000.0]
    throttle.clock = lambda: now[0]
    try:
        for n in range(5):  # five attackers' sessions, one guess each, far enough apart
            assert not throttle.attempt(PASSWORD, f"guess {n}", f"attacker-{n}").ok
            now[0] += 100
        at = log_in(open_admin(), PASSWORD)  # a new session with the right password
        assert [e for e in at.error if "Too many wrong passwords" in e.value]
        assert not at.tabs
    finally:
        throttle.clock = __import__("time").monotonic


def test_right_password_opens_the_page(admin_home: Path) -> None:
    at = logged_in()
    assert [t.label for t in at.tabs] == ["Upload a catalog", "Ingest runs", "Delete a product"]
    at.button(key="logout").click().run()
    assert not at.tabs and at.text_input(key="admin_password")


# -- uploads ------------------------------------------------------------------------------------
def test_bulk_upload_with_a_zip_lands_and_shows_in_search(admin_home: Path) -> None:
    at = logged_in()
    bad_row = catalog_csv([9], price="not a price").decode().splitlines()[1]
    catalog = catalog_csv([0, 1, 2, 3]) + (bad_row + "\n").encode()
    images = zip_of({f"images/a{i}.jpg": jpeg(i) for i in range(4)} | {"images/readme.txt": b"hi", "__MACOSX/images/._a0.jpg": b"x"})
    at.file_uploader(key="catalog_file").set_value(("products.csv", catalog, "text/csv")).run()
    at.radio(key="images_mode").set_value("A ZIP file").run()
    at.file_uploader(key="zip_file").set_value(("images.zip", images, "application/zip")).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Rows": "5", "Rows OK": "4", "Rows with errors": "1", "Images in upload": "4"}
    problems = table_with(at, "problem")
    assert list(problems["sku"]) == ["UP-009"] and "not a price" in problems["message"][0]
    assert uploaded_files(admin_home) == []  # a preview writes nothing
    assert product_count(admin_home) == 0

    at.button(key="ingest").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s for s in [*at.warning, *at.success] if "4 new" in s.value], texts(at)
    assert at.download_button(key="report")  # the row with the bad price is in the report
    assert product_count(admin_home) == 4
    folders = list((admin_home / "uploads").iterdir())
    assert len(folders) == 1 and sorted(p.name for p in (folders[0] / "images" / "images").iterdir()) == [f"a{i}.jpg" for i in range(4)]

    runs = table_with(at, "trigger")
    assert runs["trigger"][0] == "admin" and runs["new"][0] == 4

    shop = AppTest.from_file(STOREFRONT, default_timeout=TIMEOUT).run()
    shop.file_uploader[0].set_value(("mine.jpg", jpeg(2), "image/jpeg")).run()
    assert not shop.exception
    first = [m.value for m in shop.get_by_key("results").markdown if m.value.startswith("**")][0]
    assert first == "**Uploaded thing 2**"


def test_upload_as_many_image_files(admin_home: Path) -> None:
    at = logged_in()
    at.file_uploader(key="catalog_file").set_value(("more.jsonl", _jsonl([10, 11]), "application/json")).run()
    at.radio(key="images_mode").set_value("Image files").run()
    at.file_uploader(key="image_files").set_value([(f"a{i}.jpg", jpeg(i), "image/jpeg") for i in (10, 11)]).run()
    assert {m.label: m.value for m in at.metric}["Images in upload"] == "2"
    assert [s for s in at.success if "every image was found" in s.value.lower()]
    at.button(key="ingest").click().run()
    assert [s for s in at.success if "2 new" in s.value], texts(at)


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
def test_malicious_zip_is_refused_and_nothing_is_written(admin_home: Path, entries: dict[str, bytes], reason: str) -> None:
    before = product_count(admin_home)
    files_before = uploaded_files(admin_home)
    at = logged_in()
    at.file_uploader(key="catalog_file").set_value(("products.csv", catalog_csv([0]), "text/csv")).run()
    at.radio(key="images_mode").set_value("A ZIP file").run()
    at.file_uploader(key="zip_file").set_value(("evil.zip", zip_of(entries), "application/zip")).run()
    assert not at.exception
    assert [e for e in at.error if "Upload refused" in e.value and reason in e.value], [e.value for e in at.error]
    assert not [b for b in at.button if b.key == "ingest"]
    assert uploaded_files(admin_home) == files_before
    assert product_count(admin_home) == before
    assert not (admin_home.parent / "evil.jpg").exists()


def test_a_catalog_that_is_not_a_catalog_is_refused(admin_home: Path) -> None:
    at = logged_in()
    at.file_uploader(key="catalog_file").set_value(("products.csv", b"name,colour\nshoe,red\n", "text/csv")).run()
    assert [e for e in at.error if "missing the required column" in e.value]


# -- history and delete -------------------------------------------------------------------------
def test_delete_a_product(admin_home: Path) -> None:
    from services.context import ShopLens
    from services.settings import Settings

    at = logged_in()
    at.file_uploader(key="catalog_file").set_value(("del.csv", catalog_csv([20, 21], image_name=lambda i: f"d{i}.jpg"), "text/csv")).run()
    at.radio(key="images_mode").set_value("Image files").run()
    at.file_uploader(key="image_files").set_value([(f"d{i}.jpg", jpeg(i), "image/jpeg") for i in (20, 21)]).run()
    at.button(key="ingest").click().run()
    before = product_count(admin_home)

    at.text_input(key="delete_sku").input("NOPE").run()
    assert [i for i in at.info if "No product with SKU 'NOPE'" in i.value]
    at.text_input(key="delete_sku").input("UP-020").run()
    assert at.button(key="delete").disabled
    at.checkbox(key="delete_confirm").check().run()
    at.button(key="delete").click().run()
    assert not at.exception
    assert [s for s in at.success if "Deleted UP-020" in s.value]
    assert product_count(admin_home) == before - 1

    app = ShopLens(Settings())
    assert "UP-020" not in {p.get("sku") for _, p in app.vectors.all_points()}
    assert "UP-021" in {p.get("sku") for _, p in app.vectors.all_points()}
    app.catalog.close()

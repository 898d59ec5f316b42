"""Admin operations without Streamlit: the login throttle, upload planning, product deletion."""

from __future__ import annotations

import io
import zipfile

import pytest

from ingest.readers import CatalogError
from server.admin import delete_product, ingest_upload, plan_upload
from server.auth import LoginThrottle
from tests.support.catalog import product_photo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_delays_grow_then_lock() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    delays = []
    for _ in range(5):
        result = throttle.attempt("secret", "wrong", "s1")
        assert not result.ok
        delays.append(result.wait_seconds)
        clock.now += result.wait_seconds + 0.01
    assert delays == [1, 2, 4, 8, 300]
    clock.now -= 200  # inside the lockout: even the right password is refused, unchecked
    blocked = throttle.attempt("secret", "secret", "s1")
    assert not blocked.ok and "Try again in" in blocked.message
    clock.now += 200
    assert throttle.attempt("secret", "secret", "s1").ok
    assert throttle.wait_seconds("s1") == 0


def test_throttle_is_process_wide_but_never_locks_the_admin_out_for_long() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for n in range(8):  # a guesser who opens a new session per guess
        throttle.attempt("secret", "wrong", f"session-{n}")
        clock.now += 0.5
    wait = throttle.wait_seconds("a-new-session")
    assert 0 < wait <= 5  # every new session waits too, so guessing stays slow …
    assert throttle.attempt("secret", "secret", "a-new-session").blocked
    clock.now += wait + 0.01  # … but the real admin is in after a few seconds
    assert throttle.attempt("secret", "secret", "a-new-session").ok


def test_throttle_forgets_after_an_hour_and_refuses_without_secret() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(4):
        clock.now += throttle.attempt("secret", "wrong", "s").wait_seconds + 1
    clock.now += 3601
    assert throttle.attempt("secret", "wrong", "s").wait_seconds == 1
    assert not throttle.attempt(None, "", "s").ok
    assert "SHOPLENS_ADMIN_PASSWORD" in throttle.attempt("", "", "s").message


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    product_photo(seed).save(out, "JPEG")
    return out.getvalue()


def test_plan_refuses_image_paths_outside_the_upload() -> None:
    catalog = (
        b"sku,title,image\n"
        b"A,Alpha,a.jpg\n"
        b"B,Beta,/etc/passwd|b.jpg\n"
        b"C,Gamma,../../secret.jpg\n"
        b"D,Delta,https://example.com/d.jpg\n"
        b"E,Epsilon,missing.jpg\n"
    )
    plan = plan_upload("c.csv", catalog, zip_bytes=_zip({"pics/a.jpg": b"1", "pics/b.jpg": b"2"}))
    assert plan.prefix == "pics/"
    images = {r.sku: r.images for r in plan.catalog.records}
    assert images == {
        "A": ("a.jpg",),
        "B": ("b.jpg",),
        "C": (),
        "D": ("https://example.com/d.jpg",),
        "E": ("missing.jpg",),
    }
    problems = {(p["sku"], p["problem"]) for p in plan.problems()}
    assert problems == {("B", "image ignored"), ("C", "image ignored"), ("E", "image missing")}  # all five load
    assert plan.rows_ok == 5 and plan.rows_with_errors == 0


def test_plan_refuses_unknown_formats() -> None:
    with pytest.raises(CatalogError, match="upload a ShopLens .csv or .jsonl, a Google Merchant Center feed"):
        plan_upload("catalog.xlsx", b"sku,title\nA,B\n")


def test_ingest_upload_then_delete(settings_factory) -> None:
    from services.context import ShopLens

    app = ShopLens(settings_factory())
    try:
        catalog = b"sku,title,image\nA,Alpha,a.jpg\nB,Beta,b.jpg\n"
        plan = plan_upload("c\x00\n.csv", catalog, files=[("a.jpg", _jpeg(1)), ("b.jpg", _jpeg(2))])
        result, report = ingest_upload(app, plan)  # a NUL in the upload's name is no ValueError
        assert result.counts.new == 2 and report.is_file() and result.status == "succeeded"
        assert list((app.settings.home / "uploads").iterdir()) == []  # the staging copy is gone after the run
        assert len(list(app.media.root.glob("??/*"))) == 2  # the images are in the media store
        media_before = set(app.catalog.referenced_media())
        assert delete_product(app, "A")
        assert not delete_product(app, "A") and not delete_product(app, "  ")
        assert app.catalog.get_product("A") is None
        assert {p.get("sku") for _, p in app.vectors.all_points()} == {"B"}
        remaining = set(app.catalog.referenced_media())
        assert len(remaining) == 1 and remaining < media_before
        assert sorted(p.relative_to(app.media.root).as_posix() for p in app.media.root.glob("??/*")) == sorted(
            remaining
        )
    finally:
        app.close()

"""Problems that name what a merchant must fix, and upload staging that does not pile up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ingest.bundles import remove_upload, sweep_uploads
from ingest.pipeline import ingestor_for
from ingest.sources import load_catalog
from services.context import ShopLens
from tests.support.catalog import product_row, write_catalog, write_rows


def test_an_image_problem_names_the_file(app: ShopLens, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    write_catalog(shop, 2)
    (shop / "images" / "notes.jpg").write_text("meeting notes, not a photo")
    (shop / "images" / "cut.jpg").write_bytes((shop / "images" / "p0-0.jpg").read_bytes()[:40])
    rows = [product_row(0, ["images/notes.jpg"]), product_row(1, ["images/cut.jpg", "images/p1-0.jpg"])]
    result = ingestor_for(app).ingest(load_catalog(str(write_rows(shop / "catalog.csv", rows))))
    messages = {e.sku: e.message for e in result.errors}
    assert messages["SKU-0000"] == "images/notes.jpg: not a recognised image format"
    assert messages["SKU-0001"].startswith("images/cut.jpg: ") and messages["SKU-0001"].count("cut.jpg") == 1
    assert result.counts.new == 2  # both products land; the second with its good photo


def test_upload_staging_folders_are_swept_and_nothing_else(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old, new = home / "uploads" / "20260101T000000Z", home / "uploads" / "20261130T120000Z"
    for folder in (old, new):
        (folder / "images").mkdir(parents=True)
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (day_ago, day_ago))
    assert sweep_uploads(home) == 1 and not old.exists() and new.exists()  # a replica may still fill `new`
    outside = tmp_path / "precious"
    outside.mkdir()
    assert not remove_upload(outside, home) and outside.exists()  # a job's parameters cannot point elsewhere
    assert not remove_upload(home / "uploads" / ".." / "uploads", home) and (home / "uploads").exists()
    assert remove_upload(new, home) and not new.exists()
    assert sweep_uploads(tmp_path / "nowhere") == 0


def test_an_uploaded_file_name_with_a_nul_byte_is_refused_clearly(settings_factory) -> None:
    from ingest.bundles import BundleError
    from server.admin import ingest_upload, plan_upload

    catalog = b"sku,title,image\nA,Alpha,a.jpg\n"
    with pytest.raises(BundleError, match="control character"):
        plan_upload("c.csv", catalog, files=[("a\x00.jpg", b"xx")])
    app = ShopLens(settings_factory())
    try:  # the same through the saving path (a plan made by hand)
        plan = plan_upload("c.csv", catalog)
        plan.files = [("b\x00.jpg", b"yy")]
        with pytest.raises(BundleError, match="control character"):
            ingest_upload(app, plan)
        assert app.catalog.counts()["products"] == 0
    finally:
        app.close()

"""The admin upload preview says what each problem does to its row (issue 17): a row whose only
problem is an image still loads, and the counts add up."""

from __future__ import annotations

import io
import zipfile

from server.admin import plan_upload


def test_the_preview_tells_skipped_rows_from_rows_that_load() -> None:
    catalog = (
        b"sku,title,price,currency,image\n"
        b"A,Alpha,1.00,EUR,a.jpg\n"
        b"B,Beta,1.00,EUR,/etc/passwd|a.jpg\n"  # loads, without the image outside the upload
        b"C,Gamma,lots,EUR,a.jpg\n"  # skipped: no price
        b"D,Delta,1.00,EUR,missing.jpg\n"  # loads, without its image
        b'E,"Epsilon,1.00,EUR,a.jpg\n'  # skipped: a stray quote (the next row is read on its own)
        b'F,Zeta,"1,299",,a.jpg\n'  # skipped: an ambiguous price
        b"G,Eta,0.500,KWD,a.jpg\n"
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.jpg", b"jpeg")
    plan = plan_upload("c.csv", catalog, zip_bytes=archive.getvalue())
    problems = {(p["sku"], p["field"], p["problem"]) for p in plan.problems()}
    assert problems == {
        ("B", "image", "image ignored"),
        ("C", "price", "row skipped"),
        ("D", "image", "image missing"),
        ("E", "title", "row skipped"),
        ("F", "price", "row skipped"),
    }
    assert (plan.rows_total, plan.rows_ok, plan.rows_with_errors) == (7, 4, 3)
    assert [str(r.price) for r in plan.catalog.records if r.sku == "G"] == ["0.500"]

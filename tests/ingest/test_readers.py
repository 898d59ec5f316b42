"""Catalog readers: whole-file problems stop the run; row problems are reported per row and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.readers import CATALOG_SUFFIXES, CatalogError, catalog_format, parse_catalog, read_catalog


def parse(text: str | bytes, fmt: str = "csv"):
    data = text.encode() if isinstance(text, str) else text
    return parse_catalog(data, name="cat", base_dir=None, fmt=fmt)


def test_csv_with_padded_headers_extra_columns_and_semicolons() -> None:
    cat = parse(" SKU ; Title ;price;image;material\nA1;Chair;12,50;a.jpg|b.jpg|a.jpg;oak\nA2;Sofa;1.299,00 €;;\n")
    record = cat.records[0]
    assert record.sku == "A1" and record.images == ("a.jpg", "b.jpg") and record.attributes == {"material": "oak"}
    assert str(record.price) == "12.50" and str(cat.records[1].price) == "1299.00"


@pytest.mark.parametrize("text, price", [("1,299.00", "1299.00"), ("$5", "5.00"), ("0", "0.00"), ("7.5", "7.50")])
def test_prices(text: str, price: str) -> None:
    assert str(parse(f'sku,title,price\nA,B,"{text}"\n').records[0].price) == price


def test_row_errors_name_line_and_field() -> None:
    cat = parse(
        "sku,title,price,in_stock\nA,Chair,abc,yes\nB,,1,yes\n,Lamp,1,no\nC,Sofa,1,perhaps\nA,Dup,1,yes\nD,Ok,1,no\n"
    )
    got = {(e.row, e.field) for e in cat.errors}
    assert got == {(2, "price"), (3, "title"), (4, "sku"), (5, "in_stock"), (6, "sku")}
    assert [r.sku for r in cat.records] == ["D"]
    assert cat.seen_skus == {"A", "B", "C", "D"}


def test_broken_csv_row_is_one_error() -> None:
    cat = parse('sku,title\nA,One\nB,Two,extra,fields\nC,"Three\n')
    assert [r.sku for r in cat.records][0] == "A"
    assert any(e.row == 3 and "fields" in e.message for e in cat.errors)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"sku,title\n", "no product rows"),
        (b"sku,name\nA,Chair\n", "missing the required column 'title'"),
        (b"title\nChair\n", "missing the required column 'sku'"),
        ("sku,title\nA,Caf\u00e9\n".encode("latin-1"), "not valid UTF-8 (byte 0xe9 on line 2)"),
        (b"<!DOCTYPE html><html><body>Login</body></html>", "HTML page"),
        (b"sku,title,sku\nA,B,C\n", "repeats column"),
    ],
)
def test_whole_file_errors(data: bytes, message: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)):
        parse(data)


def test_jsonl_rows() -> None:
    cat = parse(
        '{"sku": "A", "title": "Chair", "price": 3, "image": ["a.jpg"], "attributes": {"wood": "oak"}}\nnot '
        'json\n[1]\n{"sku": 5, "title": "Five"}\n',
        "jsonl",
    )
    assert [r.sku for r in cat.records] == ["A", "5"]
    assert cat.records[0].attributes == {"wood": "oak"}
    assert {e.row for e in cat.errors} == {2, 3}


def test_file_level_checks(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        read_catalog(tmp_path / "nope.csv")
    (tmp_path / "cat.xlsx").write_bytes(b"PK")
    with pytest.raises(CatalogError, match="unsupported catalog format"):
        read_catalog(tmp_path / "cat.xlsx")


def test_catalog_format_from_the_name() -> None:
    names: dict[str | Path, str] = {"a.csv": "csv", "A.TSV": "csv", "dir.v2/a.txt": "csv", "a.jsonl": "jsonl"}
    names |= {"a.NDJSON": "jsonl", "C:\\exports\\a.json": "jsonl", Path("/tmp/a.Csv"): "csv"}
    assert {name: catalog_format(name) for name in names} == names
    assert set(CATALOG_SUFFIXES.values()) == {"csv", "jsonl"}
    with pytest.raises(CatalogError, match=r"unsupported catalog format \.xlsx: use \.csv or \.jsonl$"):
        catalog_format("a.xlsx")
    with pytest.raises(CatalogError, match=r"format \(no extension\): upload a file$"):
        catalog_format("catalog", advice="upload a file")


def test_json_array_catalogs() -> None:
    cat = parse('[{"sku": "A", "title": "Chair"}, 7, {"sku": "B"}]', "jsonl")
    assert [r.sku for r in cat.records] == ["A"]
    assert {(e.row, e.field) for e in cat.errors} == {(2, None), (3, "title")}
    with pytest.raises(CatalogError, match="not valid JSON"):
        parse('[{"sku": "A",', "jsonl")


def test_nul_bytes_and_non_text_cells_are_row_problems() -> None:
    csv_cat = parse(b"sku,title,image\nA,ok,\nB,x\x00y,\nC,fine,a\x00b.jpg\n")
    assert [r.sku for r in csv_cat.records] == ["A"]
    assert {(e.row, e.field, e.code) for e in csv_cat.errors} == {
        (3, "title", "invalid_field"),
        (4, "image", "invalid_field"),
    }
    assert all("NUL byte" in e.message for e in csv_cat.errors)
    jsonl = parse(
        '{"sku": "A", "title": ["a", "list"]}\n{"sku": {"x": 1}, "title": "T"}\n'
        '{"sku": "B", "title": "ok", "image": ["x.jpg", "y\\u0000.jpg"]}\n{"sku": true, "title": "T"}\n',
        "jsonl",
    )
    assert jsonl.records == []
    assert {(e.row, e.field) for e in jsonl.errors} == {(1, "title"), (2, "sku"), (3, "image"), (4, "sku")}


def test_numeric_skus_are_text_for_every_check() -> None:
    cat = parse('{"sku": 1.5, "title": "A"}\n{"sku": 1.5, "title": "again"}\n{"sku": 7, "title": "B"}\n', "jsonl")
    assert [r.sku for r in cat.records] == ["1.5", "7"]
    assert [e.code for e in cat.errors] == ["duplicate_sku"]
    assert cat.seen_skus == {"1.5", "7"}  # so --prune keeps them

"""Catalog readers: whole-file problems stop the run; row problems are reported per row and field."""

from __future__ import annotations

import csv
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
    with pytest.raises(CatalogError, match=r"format \.xlsx: use a ShopLens \.csv or \.jsonl, .*Merchant Center"):
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


# -- prices in their currency's minor units (issue 17 item 8) ----------------------------------
def price_of(text: str, currency: str = "") -> str:
    cat = parse(f'sku,title,price,currency\nA,B,"{text}",{currency}\n')
    assert not cat.errors, cat.errors
    return str(cat.records[0].price)


@pytest.mark.parametrize("currency", ["KWD", "BHD", "OMR", "JOD", "TND"])
@pytest.mark.parametrize("text, price", [("0.500", "0.500"), ("12.500", "12.500"), ("0.005", "0.005"), ("7", "7.000")])
def test_three_decimal_currencies_keep_their_fils(currency: str, text: str, price: str) -> None:
    assert price_of(text, currency) == price


@pytest.mark.parametrize(
    "text, currency, price",
    [
        ("0.500", "USD", "0.50"),
        ("1,299", "USD", "1299.00"),  # a single separator before three digits groups thousands in USD
        ("1.299", "EUR", "1299.00"),
        ("12.500", "EUR", "12500.00"),
        ("1,299.50", "KWD", "1299.500"),  # both separators: the last one is the decimal mark
        ("1.299,5", "KWD", "1299.500"),
        ("1.299.000", "EUR", "1299000.00"),
        ("1,00,000.00", "INR", "100000.00"),
        ("12,50", "EUR", "12.50"),
        ("1500.00", "JPY", "1500"),
        ("1,500", "JPY", "1500"),
        ("KWD 12.500", "", "12.500"),  # the code written in the cell is the currency
        ("1.299 €", "", "1299.00"),  # every currency written € or $ has two minor digits
        ("$1,299", "", "1299.00"),
        ("0.005", "", "0.005"),  # no currency: up to three decimals, nothing lost
        ("0,5", "", "0.50"),
        ("1234.567", "", "1234.567"),  # a four-digit group is no thousands group
        ("99999999999.999", "", "99999999999.999"),  # the largest products.price holds
    ],
)
def test_prices_in_their_currency(text: str, currency: str, price: str) -> None:
    assert price_of(text, currency) == price


@pytest.mark.parametrize(
    "text, currency, message",
    [
        ("1,299", "", "'1,299' is ambiguous without a currency: 1299 or 1.299? write 1299 or 1.299"),
        ("12.500", "", "'12.500' is ambiguous without a currency: 12500 or 12.500?"),
        ("1,299", "XYZ", "ambiguous with XYZ, which is no ISO 4217 currency"),
        ("1,299", "KWD", "'1,299' is ambiguous in KWD, which has 3 decimals: 1299 or 1.299? write 1299 or 1.299"),
        ("0.005", "USD", "'0.005' has more decimals than USD has (2 decimals)"),
        ("1500.50", "JPY", "'1500.50' has more decimals than JPY has (no decimals)"),
        ("1,299.505", "EUR", "has more decimals than EUR has"),
        ("12.3456", "", "has more than 3 decimals"),
        ("1,2,3", "", "misplaced separators"),
        ("100000000000", "", "too large"),
        ("12.500 KWD", "USD", "'12.500 KWD' is in KWD but the row's currency is USD"),
        ("1e3", "", "not a decimal number"),
    ],
)
def test_prices_that_cannot_be_read_for_sure_are_row_problems(text: str, currency: str, message: str) -> None:
    cat = parse(f'sku,title,price,currency\nA,B,"{text}",{currency}\nC,D,1,\n')
    assert [r.sku for r in cat.records] == ["C"]  # one bad price never sinks the others
    (error,) = cat.errors
    assert (error.row, error.field, error.sku, error.code) == (2, "price", "A", "invalid_field")
    assert message in error.message


def test_json_prices_are_numbers_in_their_currency() -> None:
    cat = parse(
        '{"sku": "A", "title": "T", "price": 0.5, "currency": "KWD"}\n'
        '{"sku": "B", "title": "T", "price": 12.345, "currency": "kwd"}\n'
        '{"sku": "C", "title": "T", "price": 0.005, "currency": "USD"}\n'
        '{"sku": "D", "title": "T", "price": 1299, "currency": "JPY"}\n'
        '{"sku": "E", "title": "T", "price": "1,299", "currency": "USD"}\n',
        "jsonl",
    )
    assert {r.sku: str(r.price) for r in cat.records} == {"A": "0.500", "B": "12.345", "D": "1299", "E": "1299.00"}
    assert [(e.sku, e.field) for e in cat.errors] == [("C", "price")]


def test_a_bad_price_is_reported_beside_the_rows_other_problems() -> None:
    cat = parse('sku,title,price,currency\nA,,"1,299",EURO\n')
    assert {e.field for e in cat.errors} == {"title", "price", "currency"}


# -- stray quotes (issue 17 items 4 and 9) ---------------------------------------------------------
def test_an_unterminated_quote_no_longer_swallows_the_next_rows() -> None:
    cat = parse('sku,title,price\nA,"Chair,10\nB,Table,20\nC,Lamp,30\n')
    assert [(r.row, r.sku, r.title) for r in cat.records] == [(3, "B", "Table"), (4, "C", "Lamp")]
    (error,) = cat.errors
    assert (error.row, error.field, error.sku, error.code) == (2, "title", "A", "unreadable_row")
    assert "not closed on its line" in error.message and "lines 3–4" in error.message
    assert {"A", "B", "C"} <= cat.seen_skus and not cat.unknown_sku_lines
    assert cat.rows_total == 3


@pytest.mark.parametrize(
    "closing",
    [
        'C,"Sofa, big",30\nD,Desk,40\n',  # ended by the next quoted cell's opening quote
        'C,Lamp 27",30\nD,Desk,40\n',  # ended by an inch mark before a comma
    ],
)
def test_a_stray_quote_ended_by_a_later_quote_is_found(closing: str) -> None:
    cat = parse('sku,title,price\nA,"Chair,10\nB,Table,20\n' + closing)
    assert [r.sku for r in cat.records] == ["B", "C", "D"]
    assert [(e.row, e.field) for e in cat.errors] == [(2, "title")]
    assert {"A", "B", "C", "D"} <= cat.seen_skus


def test_every_row_after_a_stray_quote_is_read_even_with_more_stray_quotes() -> None:
    cat = parse('sku,title,price\nA,"Chair,10\nB,Table,20\nC,"Lamp,30\nD,Desk,40\nE,Sofa,50\n')
    assert [r.sku for r in cat.records] == ["B", "D", "E"]
    assert [(e.row, e.sku) for e in cat.errors] == [(2, "A"), (4, "C")]
    assert {"A", "B", "C", "D", "E"} <= cat.seen_skus


def test_descriptions_written_on_several_lines_keep_loading() -> None:
    text = (
        "sku,title,description,category,brand,price,currency,in_stock,image,color\n"
        'A,Chair,"Solid oak.\nSeat height: 45 cm, width: 50 cm\n\n""Classic"" line, made in Italy",Chairs,Acme,'
        "12.50,EUR,yes,a.jpg,red\n"
        'B,Lamp,"One line only",Lamps,Acme,9.00,EUR,yes,b.jpg,blue\n'
        'C,Sofa,"Sizes:\nS, M, L, XL, XXL, 3XL, 4XL, 5XL, 6XL, 7XL",Sofas,Acme,99,EUR,no,c.jpg,green\n'
        'D,Desk,"Top: 27"" wide\nLegs: steel",Desks,Acme,120,EUR,yes,d.jpg,black\n'
    )
    cat = parse(text)
    assert not cat.errors and [r.sku for r in cat.records] == ["A", "B", "C", "D"]
    assert [r.row for r in cat.records] == [2, 6, 7, 9]  # the line each row starts on
    assert cat.records[0].description == (
        'Solid oak.\nSeat height: 45 cm, width: 50 cm\n\n"Classic" line, made in Italy'
    )
    assert cat.records[3].description == 'Top: 27" wide\nLegs: steel'
    sizes = parse('sku,title,description\nA1,Table,"Solid oak table.\nSizes: small, medium, large"\nB,T,d\n')
    assert not sizes.errors and [r.sku for r in sizes.records] == ["A1", "B"]


def test_a_row_broken_by_a_stray_quote_keeps_its_sku_for_prune() -> None:
    cat = parse('sku,title,price\nA,Chair,10\nB,"12" chair", red,20\nC,Lamp,30\n')
    assert [r.sku for r in cat.records] == ["A", "C"]
    (error,) = cat.errors
    assert (error.row, error.sku, error.code) == (3, "B", "unreadable_row") and "4 fields" in error.message
    assert {"A", "B", "C"} <= cat.seen_skus and not cat.unknown_sku_lines


def test_rows_whose_sku_cannot_be_read_make_prune_unsafe() -> None:
    cat = parse('sku,title,price\nA,Chair,10\n,"12" chair", red,20\n')
    assert cat.unknown_sku_lines == [3]
    problem = cat.prune_problem()
    assert problem is not None and (problem.row, problem.code) == (3, "prune_skipped")
    assert "--force-prune" in problem.message and "line 3" in problem.message
    assert parse("sku,title\nA,Chair\n,\n").prune_problem() is None  # a blank line is no row


def test_broken_json_lines_keep_the_sku_they_name() -> None:
    cat = parse(
        '{"sku": "A1", "title": "Cha\n{"title": "x", "sk\n["Z9", "list"]\n{"SKU": 7.5, "title": 1,\n'
        '{"sku": ["L1"], "title": "T"}\n{"sku": "U\\u00e9", "title"\n',
        "jsonl",
    )
    assert cat.records == [] and len(cat.errors) == 6
    assert {"A1", "Z9", "7.5", "L1", "U\u00e9"} <= cat.seen_skus
    assert cat.unknown_sku_lines == [2]  # the one line that names no SKU


def test_json_text_may_hold_unicode_line_separators() -> None:
    cat = parse('{"sku": "A", "title": "one\u2028two"}\n{"sku": "B", "title": "x"}\n', "jsonl")
    assert [(r.row, r.sku, r.title) for r in cat.records] == [(1, "A", "one\u2028two"), (2, "B", "x")]


def test_json_arrays_read_keys_like_json_lines() -> None:
    cat = parse('[{"SKU": "A", " Title ": "Chair"}]', "jsonl")
    assert [(r.sku, r.title) for r in cat.records] == [("A", "Chair")]


def test_a_quote_that_swallows_more_than_a_cell_may_hold_loses_no_row() -> None:
    """csv gives up on a cell past its size limit: the row is reported, the lines it took are read
    again (the limit is lowered here so that the test stays small)."""
    before = csv.field_size_limit(200)
    try:
        rows = "".join(f"S{i},Title {i},{i}\n" for i in range(40))
        cat = parse('sku,title,price\nA,"Chair,10\n' + rows)
    finally:
        csv.field_size_limit(before)
    assert [r.sku for r in cat.records] == [f"S{i}" for i in range(40)]
    assert [(e.row, e.sku, e.code) for e in cat.errors] == [(2, "A", "unreadable_row")]
    assert "field larger than field limit" in cat.errors[0].message


def test_text_cells_are_stripped_as_every_check_strips_them() -> None:
    cat = parse("sku,title\nA\x1f,Chair\x1c\n")  # str.strip drops \x1c-\x1f, pydantic's strip does not
    assert [(r.sku, r.title) for r in cat.records] == [("A", "Chair")] and cat.seen_skus == {"A"}

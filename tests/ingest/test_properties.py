"""Property tests of the catalog readers and row validation (Hypothesis): whatever a file holds,
reading it raises nothing but CatalogError, every row problem names its line and what is wrong,
and every SKU the file names is kept by `--prune`; prices read back as written."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.readers import Catalog, CatalogError, parse_catalog
from ingest.records import MAX_PRICE, ProductRecord, RowError, read_price, scalar_text, validate_row

CHEAP = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HEADER = ["sku", "title", "price", "currency", "description"]

# cells: what exports and hand edits put in catalogs, stray quotes and separators above all
chars = st.one_of(st.sampled_from('"",;\t\n\r\x00|\'\ufeff\u2028 a1.'), st.characters(codec="utf-8"))


def texts(size: int) -> st.SearchStrategy[str]:
    return st.text(chars, max_size=size)


cell = st.one_of(
    texts(12),
    st.sampled_from(["12.500", "1,299", "0.005", "1.299,00 €", "$5", "-3", "nan", "1e400", "KWD 0.500", "x" * 70_000]),
    st.integers().map(str),
    st.floats(allow_nan=True).map(str),
)
# SKUs as merchants write them (letters, digits, dashes, numbers), never with a stray quote of their own
sku_text = st.one_of(
    st.text(st.characters(categories=("L", "N"), include_characters="-_./#"), min_size=1, max_size=20),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(str),
)


def read(data: bytes, fmt: str) -> Catalog | None:
    """The catalog, or None for a whole-file problem: any other exception fails the property."""
    try:
        catalog = parse_catalog(data, name="prop", base_dir=None, fmt=fmt)
    except CatalogError as exc:
        assert exc.message
        return None
    lines = data.count(b"\n") + data.count(b"\r") + 1
    for error in catalog.errors:
        assert isinstance(error, RowError)
        assert error.row >= 1 and (error.field or error.message), error
        assert fmt != "csv" or error.row <= lines, (error, lines)
    for record in catalog.records:
        assert record.sku in catalog.seen_skus
    problem = catalog.prune_problem()
    assert (problem is None) == (not catalog.unknown_sku_lines)
    return catalog


@CHEAP
@given(data=st.binary(max_size=400), fmt=st.sampled_from(["csv", "jsonl"]))
def test_any_bytes_are_a_catalog_or_a_catalog_error(data: bytes, fmt: str) -> None:
    read(data, fmt)


@CHEAP
@given(body=st.lists(texts(16), max_size=8))
def test_any_text_under_a_valid_header_is_read(body: list[str]) -> None:
    read(("sku,title\n" + "\n".join(body)).encode(), "csv")


def rows_strategy() -> st.SearchStrategy[list[tuple[str, list[str]]]]:
    return st.lists(st.tuples(sku_text, st.lists(cell, min_size=0, max_size=5)), min_size=1, max_size=8)


@CHEAP
@given(rows=rows_strategy(), delimiter=st.sampled_from([",", ";", "\t"]), column=st.integers(0, len(HEADER) - 1))
def test_every_sku_of_a_hand_edited_csv_is_kept_by_prune(
    rows: list[tuple[str, list[str]]], delimiter: str, column: int
) -> None:
    """Cells joined as a hand edit or a naive export would: unescaped quotes, separators and line
    breaks. Whatever they do to the rows, no SKU is lost to prune: a SKU at the start of a line is
    always kept; one further on may be moved by the cells before it, and then prune waits."""
    header = HEADER[1 : column + 1] + ["sku"] + HEADER[column + 1 :]
    lines = [delimiter.join(header)]
    for sku, cells in rows:
        padded = (cells + [""] * len(header))[: len(header) - 1]
        lines.append(delimiter.join(padded[:column] + [sku] + padded[column:]))
    catalog = read(("\n".join(lines) + "\n").encode(), "csv")
    assert catalog is not None
    missing = {sku.strip() for sku, _ in rows} - catalog.seen_skus
    assert not missing or (column > 0 and catalog.unknown_sku_lines), missing


@CHEAP
@given(rows=rows_strategy())
def test_every_sku_of_a_well_quoted_csv_is_kept_and_multi_line_cells_read_back(
    rows: list[tuple[str, list[str]]],
) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    for sku, cells in rows:
        writer.writerow([sku, *(c.replace("\x00", "") for c in cells)])
    catalog = read(out.getvalue().encode(), "csv")
    assert catalog is not None
    assert {sku.strip() for sku, _ in rows} <= catalog.seen_skus


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), cell),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=4,
)
json_sku = st.one_of(sku_text, st.integers(), st.floats(allow_nan=False, allow_infinity=False))


@CHEAP
@given(
    items=st.lists(
        st.tuples(json_sku, st.dictionaries(st.sampled_from(HEADER[1:] + ["image", "x"]), json_value, max_size=4)),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_every_sku_of_json_lines_is_kept_or_prune_waits(
    items: list[tuple[Any, dict[str, Any]]], cuts: list[int]
) -> None:
    """Lines cut short anywhere (a truncated export): a SKU the line still names is kept; a line
    that names none makes prune wait."""
    lines = []
    for index, (sku, fields) in enumerate(items):
        line = json.dumps({"sku": sku, **fields}, ensure_ascii=index % 2 == 0)
        if index < len(cuts) and cuts[index] < len(line):
            line = line[: cuts[index]]
        lines.append(line)
    catalog = read("\n".join(lines).encode(), "jsonl")
    if catalog is None:  # every line was cut to nothing
        assert not any(line.strip() for line in lines)
        return
    for number, (line, (sku, _)) in enumerate(zip(lines, items, strict=True), start=1):
        text = scalar_text(json.loads(json.dumps(sku)))
        if not text or not line.strip():
            continue
        assert text in catalog.seen_skus or number in catalog.unknown_sku_lines, (line, text)


@CHEAP
@given(raw=st.dictionaries(st.sampled_from([*HEADER, "in_stock", "image", "brand", "x"]), json_value))
def test_validation_returns_a_record_or_named_problems(raw: dict[str, Any]) -> None:
    result = validate_row(7, raw)
    if isinstance(result, ProductRecord):
        assert result.sku and result.title and result.row == 7
        return
    assert result and all(e.row == 7 and (e.field or e.message) for e in result)


currency = st.sampled_from([None, "", "USD", "EUR", "JPY", "KWD", "BHD", "TND", "CLF", "XYZ", "usd", "EURO"])


@CHEAP
@given(value=st.one_of(cell, st.integers(), st.floats(), st.decimals(), st.booleans(), st.none()), code=currency)
def test_a_price_is_a_decimal_in_range_or_a_value_error(value: Any, code: str | None) -> None:
    try:
        price = read_price(value, code)
    except ValueError as exc:
        assert str(exc)
        return
    if price is not None:
        assert Decimal(0) <= price < MAX_PRICE and price.is_finite()
        assert -int(price.as_tuple().exponent) <= 4


minor_units = {"USD": 2, "EUR": 2, "JPY": 0, "KWD": 3, "BHD": 3, "TND": 3, "CLF": 4}


@CHEAP
@given(
    units=st.integers(min_value=0, max_value=10**14 - 1),
    code=st.sampled_from(sorted(minor_units)),
    grouped=st.booleans(),
)
def test_prices_written_plainly_or_with_thousands_read_back_exactly(units: int, code: str, grouped: bool) -> None:
    minor = minor_units[code]
    amount = Decimal(units).scaleb(-minor)
    if amount >= MAX_PRICE:
        return
    text = f"{amount:,.{minor}f}" if grouped else f"{amount:.{minor}f}"
    assert read_price(text, code) == amount
    assert read_price(f"{text} {code}", None) == amount
    european = text.translate(str.maketrans(",.", ".,"))  # 1.299,50
    if minor != 3:  # 12,500 is refused in dinars: 12500 or 12.5?
        assert read_price(european, code) == amount

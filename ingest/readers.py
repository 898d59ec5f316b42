"""Catalog readers: CSV and JSONL files into validated records plus per-row errors; the exports of
Google Merchant Center, Shopify and WooCommerce are recognised from their content and read by
ingest/formats (gzip-compressed ones too).

A problem with the whole file (not UTF-8, no header, a required column missing, no rows) is a
CatalogError and nothing is written; a problem with one row is a RowError and the rest goes on.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ingest.records import (
    REQUIRED_FIELDS,
    SKU_MAX_LENGTH,
    ProductRecord,
    RowError,
    scalar_text,
    validate_row,
)
from services.errors import ShopLensError

# The suffixes a catalog file may have, each with the ShopLens format read when the content is no
# platform's export ("csv" also reads tab-separated and ;-separated files). A platform's export is
# found from the content whatever the name (ingest/formats); .xml is there for feeds, .gz for any
# compressed catalog (feed.xml.gz, products.csv.gz: the name inside decides the fallback).
CATALOG_SUFFIXES = {
    **dict.fromkeys((".csv", ".tsv", ".txt", ".xml", ".gz"), "csv"),
    **dict.fromkeys((".jsonl", ".ndjson", ".json"), "jsonl"),
}
MAX_CATALOG_BYTES = 512 * 1024 * 1024
csv.field_size_limit(16 * 1024 * 1024)


class CatalogError(ShopLensError):
    """The catalog file as a whole cannot be used; nothing was written."""

    code = "bad_catalog"
    http_status = 422


@dataclass
class Catalog:
    """A read catalog: valid records (unique SKUs), row errors, and what `--prune` must keep.

    `seen_skus` is the prune keep-list: every SKU the file names, in rows that fail too. Where the
    columns of a row cannot be trusted (a stray quote or separator: more or fewer cells than the
    header, lines a quoted cell ran over, a broken JSON line) it holds every cell that may be the
    SKU: text that is no SKU costs nothing there, a SKU left out deletes a product that is still for
    sale. `unknown_sku_lines` are such rows that name no SKU at all: while there are any, which
    products left the catalog is not known, so prune removes nothing unless forced."""

    source: str
    base_dir: Path | None
    records: list[ProductRecord] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    seen_skus: set[str] = field(default_factory=set)
    rows_total: int = 0
    unknown_sku_lines: list[int] = field(default_factory=list)
    # products the platform marks unpublished (draft, archived, hidden): left out, and counted so the
    # run summary says so; they are not in `seen_skus`, so prune takes them out of search
    unpublished: int = 0
    format: str = "shoplens"  # or the platform export it was read as (google-xml, shopify, …)

    def prune_problem(self) -> RowError | None:
        """Why pruning would be a guess (rows whose SKU could not be read), or None when it is safe."""
        lines = self.unknown_sku_lines
        if not lines:
            return None
        shown = ", ".join(map(str, lines[:10])) + (" …" if len(lines) > 10 else "")
        return RowError(
            lines[0],
            None,
            f"prune skipped, no product removed: {len(lines)} row(s) could not be split into their columns and "
            f"name no SKU (line {shown}), so a product missing from what was read may still be in the file; fix "
            "those rows, or prune anyway with --force-prune (force_prune in the API)",
            code="prune_skipped",
        )


@dataclass(frozen=True)
class _Row:
    """One row as read: its cells, or the problem that kept it from being read."""

    line: int
    cells: dict[str, Any] | RowError
    keep: tuple[str, ...] = ()  # text of this row that may be a product's SKU: prune keeps it
    sku_unknown: bool = False  # its columns cannot be trusted and its SKU cell is empty


def read_catalog(path: Path, fmt: str | None = None) -> Catalog:
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog file not found: {path}")
    if not path.is_file():
        raise CatalogError(f"catalog is not a file: {path}")
    if path.stat().st_size > MAX_CATALOG_BYTES:
        raise CatalogError(f"catalog file is larger than {MAX_CATALOG_BYTES // 2**20} MiB: {path}")
    fmt = fmt or catalog_format(path)
    return parse_catalog(path.read_bytes(), name=str(path), base_dir=path.resolve().parent, fmt=fmt)


def parse_catalog(data: bytes, name: str, base_dir: Path | None, fmt: str) -> Catalog:
    """Parse catalog bytes (a file, an upload or a download): a platform's export when the content is
    one (gzip-compressed or not), otherwise ShopLens' own format `fmt`, 'csv' or 'jsonl'."""
    from ingest.formats import gunzip, platform_of, read_platform

    data = gunzip(data, name, MAX_CATALOG_BYTES)
    platform = platform_of(data)
    if platform is not None:
        return read_platform(platform, data, name, base_dir)
    text = _decode(data, name)
    rows = _csv_rows(text, name) if fmt == "csv" else _jsonl_rows(text, name)
    catalog = Catalog(source=name, base_dir=base_dir)
    first_line: dict[str, int] = {}
    for row in rows:
        catalog.rows_total += 1
        catalog.seen_skus.update(row.keep)
        line, raw = row.line, row.cells
        if row.sku_unknown:
            catalog.unknown_sku_lines.append(line)
        if isinstance(raw, RowError):
            catalog.errors.append(raw)
            continue
        sku = scalar_text(raw.get("sku"))
        if sku is None:  # a list or an object where the SKU belongs: the SKU meant is in it
            catalog.seen_skus.update(_scalars(raw.get("sku")))
        sku = sku or ""
        if sku in first_line:
            catalog.errors.append(
                RowError(
                    line,
                    "sku",
                    f"duplicate SKU {sku!r} (first on line {first_line[sku]}); row skipped",
                    sku,
                    "duplicate_sku",
                )
            )
            continue
        if sku:
            first_line[sku] = line
            catalog.seen_skus.add(sku)
        result = validate_row(line, raw)
        if isinstance(result, list):
            catalog.errors.extend(result)
            continue
        catalog.records.append(result)
    if catalog.rows_total == 0:
        raise CatalogError(f"the catalog has no product rows: {name}")
    return catalog


FORMATS_ADVICE = (
    "a ShopLens .csv or .jsonl, a Google Merchant Center feed (.xml, .tsv, .txt) or a Shopify or WooCommerce "
    "export (.csv), gzipped (.gz) or not"
)


def catalog_format(name: str | PurePath, advice: str = f"use {FORMATS_ADVICE}") -> str:
    """'csv' or 'jsonl', from a catalog file's name (a path or an upload's name): what its content is
    read as unless it is a platform's export; any other suffix is a CatalogError whose message
    ends with `advice`."""
    path = PurePath(name)
    suffix = path.suffix.lower()
    if suffix == ".gz" and PurePath(path.stem).suffix.lower() in CATALOG_SUFFIXES:
        suffix = PurePath(path.stem).suffix.lower()  # products.jsonl.gz is JSON lines once unpacked
    if suffix not in CATALOG_SUFFIXES:
        raise CatalogError(f"unsupported catalog format {suffix or '(no extension)'}: {advice}")
    return CATALOG_SUFFIXES[suffix]


def _decode(data: bytes, name: str) -> str:
    if not data.strip():
        raise CatalogError(f"the catalog file is empty: {name}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CatalogError(
            f"the catalog is not valid UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8: {name}"
        ) from None


def _csv_rows(text: str, name: str) -> Iterator[_Row]:
    sample = text[:65536]
    if sample.lstrip().startswith(("<!doctype", "<html", "<!DOCTYPE", "<HTML")):
        raise CatalogError(f"the catalog looks like an HTML page, not CSV: {name}")
    try:
        dialect = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|")
        delimiter = dialect.delimiter if dialect.delimiter != "|" else ","
    except csv.Error:
        delimiter = ","
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise CatalogError(f"the catalog has no header row: {name} ({exc})") from None
    header = [h.strip().lower() for h in header]
    missing = [f for f in REQUIRED_FIELDS if f not in header]
    if missing:
        raise CatalogError(
            f"the catalog is missing the required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (found: {', '.join(h for h in header if h) or 'none'}): {name}"
        )
    duplicates = sorted({h for h in header if h and header.count(h) > 1})
    if duplicates:
        raise CatalogError(f"the catalog header repeats column(s) {', '.join(duplicates)}: {name}")
    width, at = len(header), header.index("sku")
    while True:
        line = lines.start_record()
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            record = lines.record
            lines.again(record[1:], line + 1)  # what the broken record took in is read again, as rows
            cells = _line_cells(record[0], delimiter)
            yield _unreadable(line, None, f"unreadable CSV row: {exc}", cells, at, delimiter)
            continue
        record = lines.record
        merged = _merged_rows(values, record, width, delimiter, at) if len(record) > 1 else None
        if merged is not None:
            column, cells = merged
            lines.again(record[1:], line + 1)
            yield _unreadable(
                line,
                header[column] or None if column < width else None,
                f'a quote (") opens this cell and is not closed on its line, so the cell ran on over lines '
                f"{line + 1}–{line + len(record) - 1}; row skipped, and those lines are read as rows of their own "
                '(write a quote inside a cell as "" and put the whole cell in quotes)',
                cells,
                at,
                delimiter,
            )
            continue
        if not any(v.strip() for v in values):
            continue  # blank line
        keep = _run_on_skus(record, delimiter)
        if len(values) > width and any(v.strip() for v in values[width:]):
            message = f"row has {len(values)} fields but the header has {width}"
            yield _unreadable(line, None, message, values, at, delimiter, keep)
            continue
        row = {h: values[i] if i < len(values) else None for i, h in enumerate(header) if h}
        if len(values) == width:
            yield _Row(line, row, keep)
            continue
        # Short (trailing cells left out), or long with empty cells after the last column: loaded as
        # before; but a stray separator or quote may have moved the SKU, so every cell is kept too,
        # and a SKU cell left empty by such a row makes pruning unsafe.
        sku = values[at].strip() if at < len(values) else ""
        yield _Row(line, row, keep + _kept_cells(values, delimiter), sku_unknown=not sku)


class _Lines:
    """The catalog's physical lines for csv.reader, which reads one record at a time: the lines of
    the record being read are at hand, and lines a stray quote swallowed are handed out again."""

    def __init__(self, text: str) -> None:
        self._source = io.StringIO(text, newline="")  # lines end at \n, \r or \r\n, as csv sees them
        self._again: list[str] = []  # lines to hand out again, the next one last
        self.number = 0  # the line number of the last line handed out
        self.record: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._again.pop() if self._again else self._source.readline()
        if not line:
            raise StopIteration
        self.number += 1
        self.record.append(line)
        return line

    def start_record(self) -> int:
        """The line number the next record starts on."""
        self.record = []
        return self.number + 1

    def again(self, lines: list[str], first: int) -> None:
        """Hand `lines` out again, numbered from `first`."""
        self._again.extend(reversed(lines))
        self.number = first - 1


def _merged_rows(
    values: list[str], record: list[str], width: int, delimiter: str, at: int
) -> tuple[int, list[str]] | None:
    """(the column whose quote swallowed the next lines, the first line read as a row) when this
    record spanning several lines is rows merged by a stray quote, not a cell written on several
    lines; None when it is not.

    A quote never properly closed (the file ends inside it, or text follows the quote that ends it)
    is a stray quote once a swallowed line reads as a row of the header's width with a SKU. A cell
    closed properly may also be a stray quote ended by an inch mark (27",199.00) further down: that
    takes more, so that descriptions written on several lines keep loading: every swallowed line
    and the first line read as rows of the header's width, and the cell is not the record's last."""
    spans = [i for i, v in enumerate(values) if "\n" in v or "\r" in v]
    if not spans:
        return None
    raw = "".join(record)
    unclosed = [i for i in spans if not _closed(raw, values[i], delimiter)]
    swallowed = [
        cells for cells in (_line_cells(text, delimiter) for text in record[1:]) if any(c.strip() for c in cells)
    ]
    rows = [len(cells) == width and bool(cells[at].strip()) for cells in swallowed]
    first = _line_cells(record[0], delimiter)
    if unclosed:
        return (unclosed[0], first) if any(rows) else None
    if rows and all(rows) and len(first) == width and spans[-1] < len(values) - 1:
        return spans[0], first
    return None


def _closed(raw: str, value: str, delimiter: str) -> bool:
    """Whether the record's text holds `value` as a quoted cell that ends where a cell ends."""
    needle = '"' + value.replace('"', '""') + '"'
    found = raw.find(needle)
    while found >= 0:
        end = found + len(needle)
        if end == len(raw) or raw[end] in (delimiter, "\r", "\n"):
            return True
        found = raw.find(needle, found + 1)
    return False


def _line_cells(text: str, delimiter: str) -> list[str]:
    """One physical line read as a row of its own; a quote it leaves open is taken as text."""
    try:
        cells = next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:
        return text.rstrip("\r\n").split(delimiter)
    if cells and cells[-1].endswith(("\n", "\r")):  # the line ended inside a quoted cell
        cells = cells[:-1] + cells[-1].rstrip("\r\n").split(delimiter)
    return cells


def _run_on_skus(record: list[str], delimiter: str) -> tuple[str, ...]:
    """Every cell of the lines a quoted cell ran over: if the quote was a stray one that no check
    caught, the products on those lines are still kept by prune (wherever their SKU is on the line:
    a line break in an unquoted cell moves it)."""
    keep: tuple[str, ...] = ()
    for text in record[1:]:
        keep += _kept_cells(_line_cells(text, delimiter), delimiter)
    return keep


def _unreadable(
    line: int,
    field: str | None,
    message: str,
    cells: list[str],
    at: int,
    delimiter: str,
    keep: tuple[str, ...] = (),
) -> _Row:
    """A row that could not be split into its cells: reported, not loaded; every cell it has is kept
    by prune, and without one where its SKU belongs, pruning is unsafe."""
    sku = cells[at].strip() if at < len(cells) else ""
    error = RowError(line, field, message, sku or None, "unreadable_row")
    return _Row(line, error, _kept_cells(cells, delimiter) + keep, sku_unknown=not sku)


def _kept_cells(cells: list[str], delimiter: str) -> tuple[str, ...]:
    """Every cell of a row whose columns cannot be trusted, and the pieces of a cell that holds the
    separator (a quote that merged cells): one of them is the row's SKU."""
    kept = []
    for cell in cells:
        pieces = [cell, *cell.split(delimiter)] if delimiter in cell else [cell]
        kept += [text for text in (p.strip().strip('"').strip() for p in pieces) if 0 < len(text) <= SKU_MAX_LENGTH]
    return tuple(kept)


def _jsonl_rows(text: str, name: str) -> Iterator[_Row]:
    stripped = text.lstrip()
    if stripped.startswith("<"):
        raise CatalogError(f"the catalog looks like an HTML page, not JSON lines: {name}")
    if stripped.startswith("["):  # a JSON array of objects is accepted too
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"the catalog is not valid JSON ({exc.msg} at line {exc.lineno}): {name}") from None
        except RecursionError:
            raise CatalogError(f"the catalog nests JSON too deeply: {name}") from None
        for index, item in enumerate(items, start=1):
            yield _json_row(index, item, "item")
        return
    for line, raw_line in enumerate(text.split("\n"), start=1):  # JSON text may hold U+2028 and the like
        if not raw_line.strip():
            continue
        try:
            item = json.loads(raw_line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            skus = _skus_in_text(raw_line)
            yield _Row(
                line,
                RowError(line, None, f"invalid JSON ({reason})", skus[0] if skus else None, "unreadable_row"),
                tuple(skus),
                sku_unknown=not skus,
            )
            continue
        yield _json_row(line, item, "line")


def _json_row(line: int, item: Any, what: str) -> _Row:
    if isinstance(item, dict):
        return _Row(line, {str(k).strip().lower(): v for k, v in item.items()})
    error = RowError(line, None, f"{what} is not a JSON object", code="unreadable_row")
    return _Row(line, error, tuple(_scalars(item)))


# "sku": "A1" or 'A1' or 1.5 (a number only where something follows it: a cut one may be longer)
_SKU_IN_TEXT = re.compile(
    r"""["']\s*sku\s*["']\s*:\s*(?:"((?:[^"\\]|\\.)*)"|'([^'\\]*)'|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?=\s*[,}\]]))""",
    re.IGNORECASE,
)


def _skus_in_text(text: str) -> list[str]:
    """The SKUs a line of broken JSON names (`{"sku": "A1", "title": "Cha` names A1), as the JSON
    reader would have read them."""
    found = []
    for match in _SKU_IN_TEXT.finditer(text):
        quoted, single, number = match.groups()
        value: Any
        if quoted is not None:
            try:
                value = json.loads(f'"{quoted}"', strict=False)
            except json.JSONDecodeError:
                value = quoted
        else:
            value = single if single is not None else json.loads(str(number))
        sku = scalar_text(value)
        if sku:
            found.append(sku)
    return found


def _scalars(value: Any) -> list[str]:
    """The texts and numbers inside a JSON value, as SKU text (a row written as a list names its SKU)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            text = scalar_text(item)
            if text and len(text) <= SKU_MAX_LENGTH:
                found.append(text)
    return found

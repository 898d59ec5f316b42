"""Catalog readers: CSV and JSONL files into validated records plus per-row errors.

A problem with the whole file (not UTF-8, no header, a required column missing, no rows) is a
CatalogError and nothing is written; a problem with one row is a RowError and the rest goes on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ingest.records import REQUIRED_FIELDS, ProductRecord, RowError, scalar_text, validate_row
from services.errors import ShopLensError

# A catalog file's format from its suffix ("csv" also reads tab-separated and ;-separated files)
CATALOG_SUFFIXES = {
    **dict.fromkeys((".csv", ".tsv", ".txt"), "csv"),
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
    """A read catalog: valid records (unique SKUs), row errors, every SKU seen (for pruning)."""

    source: str
    base_dir: Path | None
    records: list[ProductRecord] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    seen_skus: set[str] = field(default_factory=set)
    rows_total: int = 0


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
    """Parse catalog bytes (a file, an upload or a download) of format 'csv' or 'jsonl'."""
    text = _decode(data, name)
    rows = _csv_rows(text, name) if fmt == "csv" else _jsonl_rows(text, name)
    catalog = Catalog(source=name, base_dir=base_dir)
    first_line: dict[str, int] = {}
    for line, raw in rows:
        catalog.rows_total += 1
        if isinstance(raw, RowError):
            catalog.errors.append(raw)
            continue
        sku = scalar_text(raw.get("sku")) or ""
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


def catalog_format(name: str | PurePath, advice: str = "use .csv or .jsonl") -> str:
    """'csv' or 'jsonl', from a catalog file's name (a path or an upload's name); any other suffix
    is a CatalogError whose message ends with `advice`."""
    suffix = PurePath(name).suffix.lower()
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


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    sample = text[:65536]
    if sample.lstrip().startswith(("<!doctype", "<html", "<!DOCTYPE", "<HTML")):
        raise CatalogError(f"the catalog looks like an HTML page, not CSV: {name}")
    try:
        dialect = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|")
        delimiter = dialect.delimiter if dialect.delimiter != "|" else ","
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
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
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, RowError(reader.line_num, None, f"unreadable CSV row: {exc}", code="unreadable_row")
            continue
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) > len(header):
            extra = values[len(header) :]
            if any(v.strip() for v in extra):
                yield (
                    line,
                    RowError(
                        line,
                        None,
                        f"row has {len(values)} fields but the header has {len(header)}",
                        _cell(values, header, "sku"),
                        "unreadable_row",
                    ),
                )
                continue
        row = {h: values[i] if i < len(values) else None for i, h in enumerate(header) if h}
        yield line, row


def _cell(values: list[str], header: list[str], name: str) -> str | None:
    i = header.index(name)
    return values[i].strip() or None if i < len(values) else None


def _jsonl_rows(text: str, name: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    stripped = text.lstrip()
    if stripped.startswith("<"):
        raise CatalogError(f"the catalog looks like an HTML page, not JSON lines: {name}")
    if stripped.startswith("["):  # a JSON array of objects is accepted too
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"the catalog is not valid JSON ({exc.msg} at line {exc.lineno}): {name}") from None
        for index, item in enumerate(items, start=1):
            yield (
                index,
                item
                if isinstance(item, dict)
                else RowError(index, None, "item is not a JSON object", code="unreadable_row"),
            )
        return
    for line, raw_line in enumerate(text.splitlines(), start=1):
        if not raw_line.strip():
            continue
        try:
            item = json.loads(raw_line)
        except json.JSONDecodeError as exc:
            yield line, RowError(line, None, f"invalid JSON ({exc.msg})", code="unreadable_row")
            continue
        if not isinstance(item, dict):
            yield line, RowError(line, None, "line is not a JSON object", code="unreadable_row")
            continue
        yield line, {str(k).strip().lower(): v for k, v in item.items()}

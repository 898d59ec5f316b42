"""Rows of a platform's CSV or TSV export, each with the line it starts on.

Platform exports are written by programs, so the standard csv module reads them as they are
(quoted cells running over several lines: Shopify's HTML bodies); what ShopLens' own reader does
for hand-edited files (stray quotes) is not needed here. A row whose cells do not fit the header
is reported, and every cell of it kept for prune, since its SKU may be any of them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.formats.mapping import Feed
from ingest.records import SKU_MAX_LENGTH, RowError


@dataclass(frozen=True)
class Row:
    line: int
    cells: dict[str, str]  # lower-case column name → cell, stripped

    def get(self, column: str) -> str:
        return self.cells.get(column, "")


def decode(data: bytes, name: str) -> str:
    from ingest.readers import _decode

    return _decode(data, name)


def table_rows(text: str, name: str, feed: Feed, delimiter: str, sku_column: str) -> Iterator[Row]:
    """The rows under the header; a row with more cells than the header is a RowError in `feed`."""
    from ingest.readers import CatalogError

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise CatalogError(f"the catalog has no header row: {name} ({exc})") from None
    width = len(header)
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CatalogError(f"the catalog cannot be read as CSV from line {start} on ({exc}): {name}") from None
        line, start = start, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        cells = {h: values[i].strip() if i < len(values) else "" for i, h in enumerate(header) if h}
        if len(values) > width and any(v.strip() for v in values[width:]):
            sku = cells.get(sku_column, "")
            message = f"row has {len(values)} fields but the header has {width}; row skipped"
            feed.errors.append(RowError(line, None, message, sku or None, "unreadable_row"))
            feed.seen_skus.update(v.strip() for v in values if 0 < len(v.strip()) <= SKU_MAX_LENGTH)
            if not sku:
                feed.unknown_sku_lines.append(line)
            continue
        yield Row(line, cells)

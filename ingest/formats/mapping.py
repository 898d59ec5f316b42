"""One mapping from every platform's catalog to ShopLens products, so the formats cannot drift apart.

A platform lists variants (sizes, colours) as rows or items of their own; a shopper searching by
photo wants the product once. Each reader therefore hands over `Draft`s (a product with its
`Variant`s, cells still as written) and this module decides, the same way for all of them: which
price and stock the product shows, which image comes first, which category it filters under,
what stays searchable as an attribute, and what is skipped (unpublished) or reported (bad cells).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.records import (
    VARIANT_PRICES,
    ProductRecord,
    RowError,
    read_price,
    validate_row,
)

if TYPE_CHECKING:
    from ingest.readers import Catalog

# How each platform writes whether a variant can be bought, as ShopLens reads it: only stock that
# ships now is "in stock"; a backorder or preorder can be bought but not had, so the in-stock filter
# leaves it out and the `availability` attribute says which it is.
AVAILABILITY = {
    "in_stock": True,
    "instock": True,
    "limited_availability": True,
    "out_of_stock": False,
    "outofstock": False,
    "sold_out": False,
    "discontinued": False,
    "preorder": False,
    "pre_order": False,
    "backorder": False,
    "onbackorder": False,
}
VARIANT_SKUS, VARIANT_STOCK = "variant_skus", "variant_stock"


@dataclass(frozen=True)
class Cell:
    """A cell as written, with the column (or XML element) it came from: problems name it."""

    field: str
    text: str


@dataclass
class Variant:
    """One buyable variant: what differs between a product's sizes and colours."""

    line: int
    sku: str = ""
    price: Cell | None = None
    sale_price: Cell | None = None  # used when present and lower than `price`
    currency: str | None = None  # where the platform writes it apart from the price
    availability: Cell | None = None  # None: the platform says nothing, so it can be bought
    images: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # colour, size, … (attribute name → value)
    codes: dict[str, str] = field(default_factory=dict)  # gtin, mpn


@dataclass
class Draft:
    """A product as a platform describes it, before the one mapping rule is applied."""

    sku: str
    line: int
    title: str = ""
    description: str = ""  # HTML or plain text
    categories: list[str] = field(default_factory=list)  # paths ("Home > Furniture > Chairs"), the first used
    brand: str | None = None
    images: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    published: bool = True


@dataclass
class Feed:
    """What a platform reader found: drafts in file order, problems of rows that never became one,
    and every SKU the file names (the prune keep-list)."""

    format: str
    drafts: list[Draft] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    seen_skus: set[str] = field(default_factory=set)
    unknown_sku_lines: list[int] = field(default_factory=list)


def to_catalog(feed: Feed, name: str, base_dir: Path | None) -> Catalog:
    """The catalog the pipeline loads: unpublished products counted and left out (not kept by prune,
    so a product taken off sale leaves the search), repeated SKUs reported as in ShopLens files."""
    from ingest.readers import Catalog, CatalogError

    catalog = Catalog(source=name, base_dir=base_dir, format=feed.format)
    catalog.errors.extend(feed.errors)
    catalog.unknown_sku_lines.extend(feed.unknown_sku_lines)
    catalog.seen_skus.update(feed.seen_skus)
    first_line: dict[str, int] = {}
    for draft in feed.drafts:
        catalog.rows_total += 1
        if not draft.published:
            catalog.unpublished += 1
            continue
        catalog.seen_skus.add(draft.sku)
        catalog.seen_skus.update(v.sku for v in draft.variants if v.sku)
        if draft.sku in first_line:
            message = f"duplicate SKU {draft.sku!r} (first on line {first_line[draft.sku]}); product skipped"
            catalog.errors.append(RowError(draft.line, "sku", message, draft.sku, "duplicate_sku"))
            continue
        first_line[draft.sku] = draft.line
        record, problems = product_record(draft)
        catalog.errors.extend(problems)
        if record is not None:
            catalog.records.append(record)
    if catalog.rows_total == 0:
        raise CatalogError(f"the catalog has no products ({feed.format}): {name}")
    return catalog


def product_record(draft: Draft) -> tuple[ProductRecord | None, list[RowError]]:
    """The one searchable product of a draft and its variants, or every problem that kept it out.

    A variant with a bad price or stock is reported and left out; the product lands with the rest.
    Its price is the lowest a shopper pays for any variant (a variant's sale price counts when it
    is lower than its regular price); it is in stock when any variant is."""
    errors: list[RowError] = []
    priced: list[tuple[Variant, Decimal | None, Decimal | None, str | None]] = []
    for variant in draft.variants:
        read = _variant_price(variant, draft.sku)
        if isinstance(read, RowError):
            errors.append(read)
            continue
        stock = _availability(variant, draft.sku)
        if isinstance(stock, RowError):
            errors.append(stock)
            continue
        priced.append((variant, *read))
    if draft.variants and not priced:  # the problems of its variants say why
        return None, errors
    currencies = {c for _, _, _, c in priced if c}
    if len(currencies) > 1:
        message = f"variants are priced in different currencies ({', '.join(sorted(currencies))}); product skipped"
        return None, [*errors, RowError(draft.line, "price", message, draft.sku)]
    kept = [v for v, _, _, _ in priced]
    prices = [p for _, p, _, _ in priced]
    known = [p for p in prices if p is not None]
    lowest = min(known) if known else None
    attributes = _attributes(draft, kept, prices)
    cheapest = next((r for _, p, r, _ in priced if p == lowest and r is not None), None)
    if cheapest is not None:
        attributes["regular_price"] = str(cheapest)
    in_stock = any(_in_stock(v) for v in kept) if kept else True
    raw = {
        "sku": draft.sku,
        "title": draft.title,
        "description": html_to_text(draft.description),
        "category": category_leaf(draft.categories[0]) if draft.categories else None,
        "brand": draft.brand,
        "price": lowest,
        "currency": next(iter(currencies), None),
        "in_stock": in_stock,
        "images": _unique([*draft.images, *(i for v in kept for i in v.images)]),
        "attributes": attributes,
    }
    result = validate_row(draft.line, raw)
    return (None, [*errors, *result]) if isinstance(result, list) else (result, errors)


def _variant_price(variant: Variant, sku: str) -> tuple[Decimal | None, Decimal | None, str | None] | RowError:
    """(what the shopper pays, the regular price when a sale lowered it, the currency)."""
    currency = variant.currency
    read: dict[str, Decimal | None] = {}
    for name, cell in (("price", variant.price), ("sale_price", variant.sale_price)):
        if cell is None or not cell.text.strip():
            read[name] = None
            continue
        try:
            read[name] = read_price(cell.text, currency)
        except ValueError as exc:
            return RowError(variant.line, cell.field, str(exc), variant.sku or sku)
        currency = currency or _written_currency(cell.text)
    price, sale = read["price"], read["sale_price"]
    if sale is not None and (price is None or sale < price):
        return sale, price, currency
    return price, None, currency


def _written_currency(text: str) -> str | None:
    match = re.search(r"\b([A-Za-z]{3})\b", text)
    return match.group(1).upper() if match else None


def _availability(variant: Variant, sku: str) -> bool | RowError:
    cell = variant.availability
    if cell is None or not cell.text.strip():
        return True
    key = re.sub(r"[\s-]+", "_", cell.text.strip().lower())
    if key not in AVAILABILITY:
        known = "in_stock, out_of_stock, preorder, backorder"
        return RowError(variant.line, cell.field, f"{cell.text.strip()!r} is not one of {known}", variant.sku or sku)
    return AVAILABILITY[key]


def _in_stock(variant: Variant) -> bool:
    stock = _availability(variant, "")
    return stock is True


def _attributes(draft: Draft, variants: list[Variant], prices: list[Decimal | None]) -> dict[str, str]:
    """Everything a shopper or the lexical search may want that has no column of its own."""
    attributes = {k: v for k, v in draft.attributes.items() if v and v.strip()}
    if draft.categories:
        attributes["category_path"] = draft.categories[0]
        if len(draft.categories) > 1:
            attributes["other_categories"] = "; ".join(draft.categories[1:])
    for key in _unique(k for v in variants for k in v.options):
        attributes[key] = ", ".join(_unique(v.options.get(key, "") for v in variants))
    for key in _unique(k for v in variants for k in v.codes):
        attributes[key] = as_list_text(_unique(v.codes.get(key, "") for v in variants))
    skus = _unique(v.sku for v in variants if v.sku != draft.sku)
    if skus:
        attributes[VARIANT_SKUS] = json.dumps(skus, ensure_ascii=False)
    if len(variants) > 1:
        attributes[VARIANT_PRICES] = json.dumps([None if p is None else str(p) for p in prices])
        attributes[VARIANT_STOCK] = json.dumps([_stock_word(v) for v in variants])
    elif variants and variants[0].availability is not None and variants[0].availability.text.strip():
        attributes["availability"] = _stock_word(variants[0])
    return attributes


def _stock_word(variant: Variant) -> str:
    cell = variant.availability
    return re.sub(r"[\s-]+", "_", cell.text.strip().lower()) if cell and cell.text.strip() else "in_stock"


def as_list_text(values: list[str]) -> str:
    """One value as itself, several as a JSON list (services/lexical.py reads each as a code)."""
    return values[0] if len(values) == 1 else json.dumps(values, ensure_ascii=False)


def _unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value and value.strip():
            seen.setdefault(value.strip(), None)
    return list(seen)


def category_leaf(path: str) -> str:
    """The last step of a category path: the name a shopper filters by ("… > Chairs" → "Chairs")."""
    steps = [s.strip() for s in path.split(">") if s.strip()]
    return steps[-1] if steps else path.strip()


def split_list(text: str, separator: str = ",") -> list[str]:
    """A platform's list cell ("a, b, c"); a backslash keeps a separator inside a value (WooCommerce)."""
    parts = re.split(rf"(?<!\\){re.escape(separator)}", text)
    return _unique(p.replace(f"\\{separator}", separator) for p in parts)


# -- HTML descriptions -----------------------------------------------------------------------------
_BLOCKS = frozenset(
    "p div h1 h2 h3 h4 h5 h6 ul ol li table tr section article blockquote pre header footer dl dt dd".split()
)
_DROPPED = frozenset({"script", "style", "template", "noscript", "head"})
_TAG = re.compile(r"<\s*/?\s*[a-zA-Z!]")


class _Text(HTMLParser):
    """HTML as the plain text a text embedding and BM25 read: blocks become paragraph breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(text: str) -> str:
    """A description as plain text: HTML (Shopify's Body, WooCommerce's descriptions, CDATA in a
    feed) loses its tags, scripts and styles but keeps its paragraphs; plain text stays as written."""
    if not text or not _TAG.search(text):
        return text.strip() if text else ""
    parser = _Text()
    parser.feed(text)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

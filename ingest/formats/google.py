"""Google Merchant Center product data: RSS 2.0 or Atom XML with the `g:` namespace, or the
tab-separated text feed.

XML is read with expat (what xml.etree runs on) through its handlers rather than iterparse, for
two reasons: each item's line number, so a problem names where it is; and a DOCTYPE is refused
the moment it starts, before any entity could be declared or expanded (no feed has one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat

from ingest.formats.mapping import Cell, Draft, Feed, Variant, split_list
from ingest.formats.table import decode, table_rows
from ingest.records import RowError

G_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"
# feed fields kept as attributes, as Merchant Center names them
KEPT = (
    "link",
    "condition",
    "google_product_category",
    "product_type",
    "item_group_id",
    "material",
    "pattern",
    "gender",
    "age_group",
    *(f"custom_label_{i}" for i in range(5)),
)
OPTIONS = ("color", "size")
CODES = ("gtin", "mpn")
_FIELDS = frozenset(
    {"id", "title", "description", "image_link", "additional_image_link", "price", "sale_price", "availability"}
    | {"brand", *KEPT, *OPTIONS, *CODES}
)


@dataclass
class Item:
    number: int  # 1 for the feed's first item
    line: int
    fields: dict[str, list[str]] = field(default_factory=dict)

    def first(self, name: str) -> str:
        return next((v for v in self.fields.get(name, ()) if v), "")


def read_xml(data: bytes, name: str) -> Feed:
    return _group(_xml_items(data, name), "google-xml", "item")


def read_tsv(data: bytes, name: str) -> Feed:
    text = decode(data, name)
    feed = Feed("google-tsv")
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first else ","
    items = []
    for number, row in enumerate(table_rows(text, name, feed, delimiter, "id"), start=1):
        item = Item(number, row.line)
        for column, value in row.cells.items():
            key = column.removeprefix("g:").replace(" ", "_")
            if key in _FIELDS and value:
                item.fields[key] = split_list(value) if key == "additional_image_link" else [value]
        items.append(item)
    return _group(items, "google-tsv", "row", feed)


def _group(items: list[Item], fmt: str, what: str, feed: Feed | None = None) -> Feed:
    """Items sharing an `item_group_id` are one product (its SKU the group id); others are one each."""
    feed = feed or Feed(fmt)
    groups: dict[str, Draft] = {}
    for item in items:
        item_id = item.first("id")
        if not item_id:
            where = f"{what} {item.number}"
            feed.errors.append(RowError(item.line, "id", f"is required ({where} has no id); item skipped"))
            feed.unknown_sku_lines.append(item.line)
            continue
        group_id = item.first("item_group_id")
        key = group_id or item_id
        draft = groups.get(key) if group_id else None
        if draft is None:
            draft = _draft(key, item)
            groups[key] = draft
            feed.drafts.append(draft)
        draft.variants.append(_variant(item_id, item))
    return feed


def _draft(sku: str, item: Item) -> Draft:
    """The product from the first item of its group: title, text, brand and category."""
    categories = [c for c in (item.first("product_type"), item.first("google_product_category")) if c]
    return Draft(
        sku=sku,
        line=item.line,
        title=item.first("title"),
        description=item.first("description"),
        categories=[c for c in categories if not c.isdigit()][:1],  # a bare taxonomy id names nothing
        brand=item.first("brand") or None,
        attributes={k: item.first(k) for k in KEPT if item.first(k)},
    )


def _variant(item_id: str, item: Item) -> Variant:
    images = [item.first("image_link"), *item.fields.get("additional_image_link", ())]
    return Variant(
        line=item.line,
        sku=item_id,
        price=Cell("price", item.first("price")),
        sale_price=Cell("sale_price", item.first("sale_price")),
        availability=Cell("availability", item.first("availability")) if item.first("availability") else None,
        images=[i for i in images if i],
        options={k: item.first(k) for k in OPTIONS if item.first(k)},
        codes={k: item.first(k) for k in CODES if item.first(k)},
    )


class _Reader:
    """expat handlers that collect each <item>/<entry>'s fields (`g:` or plain RSS/Atom names)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parser = expat.ParserCreate(namespace_separator=" ")
        self.items: list[Item] = []
        self.depth = 0
        self.root: str | None = None
        self.item: Item | None = None
        self.item_depth = 0
        self.key: str | None = None
        self.text: list[str] = []
        self.google = False
        p = self.parser
        p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = self.start, self.end, self.chars
        p.StartDoctypeDeclHandler = self.doctype
        p.EntityDeclHandler = self.entity

    def doctype(self, *_: object) -> None:
        raise _refused(self.name, "declares a DOCTYPE, which no product feed has (it could expand entities)")

    def entity(self, *_: object) -> None:
        raise _refused(self.name, "declares an ENTITY, which no product feed has")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        ns, local = _split(tag)
        if self.root is None:
            self.root = local
            if local == "html":
                raise _html(self.name)
            if not ((local == "rss" and not ns) or (local == "feed" and ns == ATOM_NS)):
                raise _refused(self.name, f"is XML with the root <{local}>, not an RSS or Atom product feed")
            return
        if self.item is None:
            if local in ("item", "entry"):
                self.item = Item(len(self.items) + 1, self.parser.CurrentLineNumber)
                self.item_depth = self.depth
            return
        if self.depth != self.item_depth + 1 or ns not in ("", G_NS, ATOM_NS):
            return
        self.google = self.google or ns == G_NS
        if local == "link" and ns == ATOM_NS and attrs.get("href") and attrs.get("rel", "alternate") == "alternate":
            self.item.fields.setdefault("link", []).append(attrs["href"].strip())
            return
        if local == "summary" and ns == ATOM_NS:
            local = "description"
        if local in _FIELDS:
            self.key, self.text = local, []

    def chars(self, data: str) -> None:
        if self.key is not None:
            self.text.append(data)

    def end(self, tag: str) -> None:
        if self.item is not None and self.depth == self.item_depth:
            self.items.append(self.item)
            self.item = None
        elif self.key is not None and self.item is not None and self.depth == self.item_depth + 1:
            value = "".join(self.text).strip()
            if value:
                self.item.fields.setdefault(self.key, []).append(value)
            self.key = None
        self.depth -= 1


def _xml_items(data: bytes, name: str) -> list[Item]:
    from ingest.formats import looks_like_html

    if looks_like_html(data):
        raise _html(name)
    reader = _Reader(name)
    try:
        reader.parser.Parse(data, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code else str(exc)
        raise _refused(
            name, f"is not well-formed XML (line {exc.lineno}, column {exc.offset + 1}: {reason}); is it cut short?"
        ) from None
    if reader.items and not reader.google:
        raise _refused(name, f"is an {reader.root} feed without Google Merchant Center's g: fields ({G_NS})")
    if not reader.items:
        raise _refused(name, "has no <item> or <entry>: no products")
    return reader.items


def _split(tag: str) -> tuple[str, str]:
    ns, _, local = tag.rpartition(" ")
    return ns, local


def _refused(name: str, why: str) -> Exception:
    from ingest.readers import CatalogError

    return CatalogError(f"the catalog {why}; nothing was loaded: {name}")


def _html(name: str) -> Exception:
    from ingest.readers import CatalogError

    return CatalogError(f"the catalog looks like an HTML page (a login or error page?), not a product feed: {name}")

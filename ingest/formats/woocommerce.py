"""WooCommerce's product CSV export: parents (simple, variable, grouped, external) and their
variations, each a row; a variation names its parent in `Parent` as "id:123" or the parent's SKU.

A variable product and its variations are one product whose SKU is the parent's (or "id:123"
where the parent has none, WooCommerce's own way of naming it). A hidden product (`Visibility in
catalog` hidden) is left out like an unpublished one: the shop itself does not show it in search.
"""

from __future__ import annotations

from ingest.formats.mapping import Cell, Draft, Feed, Variant, html_to_text, split_list
from ingest.formats.table import Row, decode, table_rows
from ingest.records import RowError

_GTIN = "gtin, upc, ean, or isbn"  # WooCommerce 9.2+


def read(data: bytes, name: str) -> Feed:
    feed = Feed("woocommerce")
    by_id: dict[str, Draft] = {}
    by_sku: dict[str, Draft] = {}
    variations: list[Row] = []
    for row in table_rows(decode(data, name), name, feed, ",", "sku"):
        if "variation" in _types(row):
            variations.append(row)
            continue
        draft = _draft(row)
        feed.drafts.append(draft)
        if row.get("id"):
            by_id[row.get("id")] = draft
        if row.get("sku"):
            by_sku.setdefault(row.get("sku"), draft)
    for row in variations:
        parent = row.get("parent")
        owner = by_id.get(parent.removeprefix("id:")) if parent.startswith("id:") else by_sku.get(parent)
        if owner is None:
            where = f"parent {parent!r} is not in the file" if parent else "no parent is named"
            feed.errors.append(RowError(row.line, "Parent", f"variation skipped: {where}", row.get("sku") or None))
            feed.seen_skus.update(s for s in (row.get("sku"), parent) if s)
            continue
        feed.seen_skus.update(s for s in (row.get("sku"),) if s)
        if row.get("published") in ("1", ""):  # 0: a disabled variation, -1: a draft one
            owner.variants.append(_variant(row, row.line))
    for draft in feed.drafts:
        if not draft.variants:  # a variable product without a variation on sale: nothing to buy yet
            draft.variants.append(Variant(draft.line, draft.sku, availability=Cell("In stock?", "out_of_stock")))
    return feed


def _types(row: Row) -> set[str]:
    return {t.strip().lower() for t in row.get("type").split(",")}


def _draft(row: Row) -> Draft:
    sku = row.get("sku") or f"id:{row.get('id')}"
    texts = [row.get("short description"), row.get("description")]
    attributes = {
        "tags": row.get("tags"),
        "link": row.get("external url"),
        "product_type": ", ".join(sorted(_types(row) - {""})),
    }
    variant = _variant(row, row.line)
    variable = "variable" in _types(row)
    if variable:  # the product stands for its variations: they bring prices and stock
        attributes |= variant.options  # the values every variation chooses from ("Blue, Green, Red")
    draft = Draft(
        sku=sku,
        line=row.line,
        title=row.get("name"),
        description="\n\n".join(html_to_text(t) for t in texts if t),
        categories=split_list(row.get("categories")),
        brand=next(iter(split_list(row.get("brands"))), None),
        images=split_list(row.get("images")),
        attributes=attributes,
        published=row.get("published") == "1" and row.get("visibility in catalog").lower() != "hidden",
    )
    if not variable:
        variant.sku = sku
        draft.variants.append(variant)
    return draft


def _variant(row: Row, line: int) -> Variant:
    """A row's price, stock, options and code: a simple product's own, or a variation's."""
    options = {}
    for i in range(1, 100):
        label = row.get(f"attribute {i} name")
        if f"attribute {i} name" not in row.cells:
            break
        if label and row.get(f"attribute {i} value(s)"):
            options[label.strip().lower().replace(" ", "_")] = row.get(f"attribute {i} value(s)")
    stock = row.get("in stock?").lower()
    availability = {"1": "in_stock", "0": "out_of_stock", "backorder": "backorder"}.get(stock, stock)
    return Variant(
        line=line,
        sku=row.get("sku"),
        price=Cell("Regular price", row.get("regular price")),
        sale_price=Cell("Sale price", row.get("sale price")),
        availability=Cell("In stock?", availability) if availability else None,
        images=split_list(row.get("images")),
        options=options,
        codes={"gtin": row.get(_GTIN)} if row.get(_GTIN) else {},
    )

"""Shopify's product CSV export: one row per variant and per extra image, sharing the `Handle`.

The product's SKU is its Handle, not its first variant's SKU: every product has a Handle and it is
unique in the shop, while variant SKUs are optional in Shopify and the first variant changes
when variants are reordered or deleted (which would make ShopLens see a new product and drop the
old one). Variant SKUs stay searchable as codes (the `variant_skus` attribute).
"""

from __future__ import annotations

from ingest.formats.mapping import Cell, Draft, Feed, Variant, split_list
from ingest.formats.table import Row, decode, table_rows

_UNPUBLISHED_STATUS = frozenset({"draft", "archived"})
_GOOGLE = {
    "google shopping / mpn": "mpn",
    "google shopping / condition": "condition",
    "google shopping / google product category": "google_product_category",
    "google shopping / gender": "gender",
    "google shopping / age group": "age_group",
    **{f"google shopping / custom label {i}": f"custom_label_{i}" for i in range(5)},
}


def read(data: bytes, name: str) -> Feed:
    feed = Feed("shopify")
    products: dict[str, tuple[Draft, list[tuple[int, int, str]], Row]] = {}
    for order, row in enumerate(table_rows(decode(data, name), name, feed, ",", "handle")):
        handle = row.get("handle")
        if not handle:
            feed.unknown_sku_lines.append(row.line)
            feed.seen_skus.update(v for v in (row.get("variant sku"),) if v)
            continue
        if handle not in products:
            draft = _draft(handle, row)
            products[handle] = (draft, [], row)
            feed.drafts.append(draft)
        draft, images, first = products[handle]
        if row.get("image src"):
            position = row.get("image position")
            images.append((int(position) if position.isdigit() else 1_000_000, order, row.get("image src")))
        if row.get("variant sku") or row.get("variant price") or row.get("option1 value"):
            draft.variants.append(_variant(row, first))
    for draft, images, _ in products.values():
        draft.images = [src for _, _, src in sorted(images)]
    return feed


def _draft(handle: str, row: Row) -> Draft:
    status = row.get("status").lower()
    published = (row.get("published") or row.get("published on online store") or "true").lower()
    attributes = {key: row.get(column) for column, key in _GOOGLE.items() if key != "mpn"}
    attributes |= {"product_type": row.get("type"), "tags": row.get("tags")}
    category = row.get("product category") or row.get("type")
    return Draft(
        sku=handle,
        line=row.line,
        title=row.get("title"),
        description=row.get("body (html)"),
        categories=[category] if category else [],
        brand=row.get("vendor") or None,
        attributes=attributes,
        published=status not in _UNPUBLISHED_STATUS and published not in ("false", "0", "no"),
    )


def _variant(row: Row, first: Row) -> Variant:
    """A variant row; option names are written on the product's first row only."""
    options = {}
    for i in (1, 2, 3):
        label, value = first.get(f"option{i} name"), row.get(f"option{i} value")
        if label and value and not (label == "Title" and value == "Default Title"):
            options[label.strip().lower().replace(" ", "_")] = value
    codes = {"gtin": row.get("variant barcode"), "mpn": row.get("google shopping / mpn")}
    return Variant(
        line=row.line,
        sku=row.get("variant sku"),
        price=Cell("Variant Price", row.get("variant price")),
        availability=_stock(row),
        images=split_list(row.get("variant image")),
        options=options,
        codes={k: v for k, v in codes.items() if v},
    )


def _stock(row: Row) -> Cell | None:
    """Shopify tracks stock only when a tracker is set; at zero, the policy `continue` still sells
    (a backorder) and `deny` does not."""
    quantity = row.get("variant inventory qty")
    if not row.get("variant inventory tracker") or not quantity.lstrip("-").isdigit() or int(quantity) > 0:
        return None
    policy = row.get("variant inventory policy").lower()
    return Cell("Variant Inventory Qty", "backorder" if policy == "continue" else "out_of_stock")

"""The catalogs merchants already have (Google Merchant Center, Shopify, WooCommerce), written as the
platforms export them, read into ShopLens products; and one ingest of two of them end to end."""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from ingest.formats.mapping import category_leaf, html_to_text, split_list
from ingest.pipeline import ingestor_for
from ingest.readers import Catalog, CatalogError, catalog_format, parse_catalog, read_catalog
from services.context import ShopLens
from services.search import SearchFilters, SearchRequest
from tests.support.catalog import product_photo

# Shopify's product_template.csv header, in the order Shopify exports it
SHOPIFY_HEADER = (
    "Handle,Title,Body (HTML),Vendor,Product Category,Type,Tags,Published,Option1 Name,Option1 Value,"
    "Option2 Name,Option2 Value,Option3 Name,Option3 Value,Variant SKU,Variant Grams,Variant Inventory Tracker,"
    "Variant Inventory Qty,Variant Inventory Policy,Variant Fulfillment Service,Variant Price,"
    "Variant Compare At Price,Variant Requires Shipping,Variant Taxable,Variant Barcode,Image Src,Image Position,"
    "Image Alt Text,Gift Card,SEO Title,SEO Description,Google Shopping / Google Product Category,"
    "Google Shopping / Gender,Google Shopping / Age Group,Google Shopping / MPN,Google Shopping / Condition,"
    "Google Shopping / Custom Product,Variant Image,Variant Weight Unit,Variant Tax Code,Cost per item,"
    "Included / United States,Price / United States,Compare At Price / United States,Included / International,"
    "Price / International,Compare At Price / International,Status"
).split(",")
# WooCommerce's exporter header (sample-data/sample_products.csv, with the 9.x Brands and GTIN columns)
WOO_HEADER = [
    "ID", "Type", "SKU", "GTIN, UPC, EAN, or ISBN", "Name", "Published", "Is featured?", "Visibility in catalog",
    "Short description", "Description", "Date sale price starts", "Date sale price ends", "Tax status",
    "Tax class", "In stock?", "Stock", "Low stock amount", "Backorders allowed?", "Sold individually?",
    "Weight (kg)", "Length (cm)", "Width (cm)", "Height (cm)", "Allow customer reviews?", "Purchase note",
    "Sale price", "Regular price", "Categories", "Tags", "Shipping class", "Images", "Download limit",
    "Download expiry days", "Parent", "Grouped products", "Upsells", "Cross-sells", "External URL", "Button text",
    "Position", "Brands", "Attribute 1 name", "Attribute 1 value(s)", "Attribute 1 visible", "Attribute 1 global",
    "Attribute 2 name", "Attribute 2 value(s)", "Attribute 2 visible", "Attribute 2 global",
]  # fmt: skip


def shopify_csv(rows: list[dict[str, str]]) -> bytes:
    """As Shopify writes it: every column, quoted only where needed, CRLF line ends."""
    out = io.StringIO()
    writer = csv.DictWriter(out, SHOPIFY_HEADER, restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def shirt_rows(images: tuple[str, str, str] = ("s1.jpg", "s2.jpg", "s3.jpg")) -> list[dict[str, str]]:
    first = {
        "Handle": "linen-shirt",
        "Title": "Linen Shirt",
        "Body (HTML)": '<p>Cool <strong>linen</strong> &amp; cotton.</p>\n<p class="x">Wash cold.</p>'
        "<script>track()</script><style>p{}</style>",
        "Vendor": "Acme",
        "Product Category": "Apparel & Accessories > Clothing > Shirts & Tops",
        "Type": "Shirt",
        "Tags": "summer, linen",
        "Published": "true",
        "Option1 Name": "Size",
        "Option2 Name": "Color",
        "Google Shopping / Condition": "new",
        "Google Shopping / MPN": "LS-100",
        "Status": "active",
    }
    variant = {
        "Variant Grams": "200",
        "Variant Inventory Tracker": "shopify",
        "Variant Inventory Policy": "deny",
        "Variant Fulfillment Service": "manual",
        "Variant Requires Shipping": "true",
        "Variant Taxable": "true",
        "Variant Weight Unit": "kg",
    }
    return [
        {**first, **variant, "Option1 Value": "S", "Option2 Value": "White", "Variant SKU": "LS-S",
         "Variant Inventory Qty": "0", "Variant Price": "15.00", "Variant Compare At Price": "20.00",
         "Variant Barcode": "4006381333931", "Image Src": images[1], "Image Position": "2"},
        {"Handle": "linen-shirt", **variant, "Option1 Value": "M", "Option2 Value": "White", "Variant SKU": "LS-M",
         "Variant Inventory Qty": "3", "Variant Price": "25.00", "Image Src": images[0], "Image Position": "1"},
        {"Handle": "linen-shirt", **variant, "Option1 Value": "L", "Option2 Value": "Blue", "Variant SKU": "LS-L",
         "Variant Inventory Qty": "5", "Variant Price": "25.00", "Variant Image": images[2]},
        {"Handle": "linen-shirt", "Image Src": images[2], "Image Position": "3", "Image Alt Text": "back"},
    ]  # fmt: skip


def read(data: bytes, name: str = "feed.csv") -> Catalog:
    return parse_catalog(data, name=name, base_dir=None, fmt=catalog_format(name))


# -- Shopify ----------------------------------------------------------------------------------------
def test_shopify_variants_are_one_product_priced_by_the_cheapest() -> None:
    draft = {"Handle": "old-mug", "Title": "Old Mug", "Published": "true", "Status": "draft",
             "Variant SKU": "MUG", "Variant Price": "9.00"}  # fmt: skip
    hidden = {"Handle": "gone", "Title": "Gone", "Published": "false", "Status": "active", "Variant Price": "1.00"}
    catalog = read(shopify_csv([*shirt_rows(), draft, hidden]), "products_export_1.csv")
    assert catalog.format == "shopify" and not catalog.errors
    assert (catalog.rows_total, catalog.unpublished) == (3, 2)
    assert "old-mug" not in catalog.seen_skus  # prune takes an unpublished product out of search
    [shirt] = catalog.records
    assert (shirt.sku, shirt.title, shirt.brand, shirt.row) == ("linen-shirt", "Linen Shirt", "Acme", 2)
    assert shirt.description == "Cool linen & cotton.\n\nWash cold."
    assert shirt.category == "Shirts & Tops"
    assert shirt.price == Decimal("15.00") and shirt.currency is None and shirt.in_stock  # S is sold out
    assert shirt.images == ("s1.jpg", "s2.jpg", "s3.jpg")  # by Image Position, variant image once
    a = shirt.attributes
    assert a["category_path"] == "Apparel & Accessories > Clothing > Shirts & Tops"
    assert (a["size"], a["color"], a["tags"], a["product_type"]) == ("S, M, L", "White, Blue", "summer, linen", "Shirt")
    assert json.loads(a["variant_skus"]) == ["LS-S", "LS-M", "LS-L"]
    assert json.loads(a["variant_prices"]) == ["15.00", "25.00", "25.00"]
    assert json.loads(a["variant_stock"]) == ["out_of_stock", "in_stock", "in_stock"]
    assert (a["gtin"], a["mpn"], a["condition"]) == ("4006381333931", "LS-100", "new")


def test_shopify_stock_policy_and_bad_variant() -> None:
    rows = shirt_rows()
    for row in rows[:3]:
        row["Variant Inventory Qty"], row["Variant Inventory Policy"] = "0", "deny"
    rows[2]["Variant Price"] = "twelve"
    catalog = read(shopify_csv(rows))
    [shirt] = catalog.records
    assert not shirt.in_stock  # every variant sold out
    [error] = catalog.errors
    assert (error.row, error.field, error.sku) == (5, "Variant Price", "LS-L")  # the body takes lines 2-3
    rows[0]["Variant Inventory Policy"] = "continue"  # sold on at zero: a backorder, not stock in hand
    assert not read(shopify_csv(rows)).records[0].in_stock
    assert json.loads(read(shopify_csv(rows)).records[0].attributes["variant_stock"])[0] == "backorder"


def test_shopify_multiline_bodies_keep_their_lines() -> None:
    rows = shirt_rows()
    rows[0]["Body (HTML)"] = '<h2>Fit</h2>\n<ul>\n<li>Relaxed, "boxy"</li>\n<li>Short</li>\n</ul>'
    data = shopify_csv(rows)
    assert b'"<h2>Fit</h2>\n<ul>\n<li>Relaxed, ""boxy""</li>' in data  # quoted as Shopify does
    catalog = read(data)
    assert catalog.records[0].description == 'Fit\n\nRelaxed, "boxy"\n\nShort'
    assert [e.row for e in catalog.errors] == []


# -- Google Merchant Center -------------------------------------------------------------------------
RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0">
  <channel>
    <title>Example shop</title>
    <link>https://shop.example</link>
    <description>All products</description>
    <item>
      <g:id>TEE-RED-S</g:id>
      <g:title>Organic Tee - Red - S</g:title>
      <g:description><![CDATA[<p>Soft <b>organic</b> cotton.</p><p>Fair trade.</p>]]></g:description>
      <g:link>https://shop.example/tee?v=red-s</g:link>
      <g:image_link>{red}</g:image_link>
      <g:additional_image_link>{back}</g:additional_image_link>
      <g:additional_image_link>{side}</g:additional_image_link>
      <g:price>30.00 USD</g:price>
      <g:sale_price>12.00 USD</g:sale_price>
      <g:availability>in stock</g:availability>
      <g:brand>Verde</g:brand>
      <g:gtin>00012345600012</g:gtin>
      <g:condition>new</g:condition>
      <g:google_product_category>Apparel &amp; Accessories &gt; Clothing</g:google_product_category>
      <g:product_type>Home &gt; Clothing &gt; Tees</g:product_type>
      <g:item_group_id>TEE</g:item_group_id>
      <g:color>Red</g:color>
      <g:size>S</g:size>
      <g:custom_label_0>summer</g:custom_label_0>
      <g:shipping><g:country>US</g:country><g:price>4.95 USD</g:price></g:shipping>
    </item>
    <item>
      <g:id>TEE-BLUE-M</g:id>
      <title>Organic Tee - Blue - M</title>
      <g:image_link>{blue}</g:image_link>
      <g:price>22.00 USD</g:price>
      <g:availability>out_of_stock</g:availability>
      <g:item_group_id>TEE</g:item_group_id>
      <g:color>Blue</g:color>
      <g:size>M</g:size>
      <g:gtin>00012345600029</g:gtin>
    </item>
    <item>
      <g:id>MUG-1</g:id>
      <g:title>Stoneware Mug</g:title>
      <g:description>Holds 350 ml &amp; keeps it warm.</g:description>
      <g:image_link>{mug}</g:image_link>
      <g:price>1,299.00 JPY</g:price>
      <g:availability>preorder</g:availability>
      <g:mpn>MG-350</g:mpn>
    </item>
  </channel>
</rss>
"""
FEED_IMAGES = {k: f"https://cdn.example/{k}.jpg" for k in ("red", "back", "side", "blue", "mug")}


def test_google_rss_groups_items_by_item_group_id() -> None:
    catalog = read(RSS.format(**FEED_IMAGES).encode(), "feed.xml")
    assert catalog.format == "google-xml" and not catalog.errors and catalog.rows_total == 2
    tee, mug = catalog.records
    assert (tee.sku, tee.title, tee.brand, tee.row) == ("TEE", "Organic Tee - Red - S", "Verde", 7)
    assert tee.description == "Soft organic cotton.\n\nFair trade."
    assert (tee.price, tee.currency, tee.in_stock, tee.category) == (Decimal("12.00"), "USD", True, "Tees")
    assert tee.images == tuple(FEED_IMAGES[k] for k in ("red", "back", "side", "blue"))
    a = tee.attributes
    assert a["category_path"] == "Home > Clothing > Tees" and a["regular_price"] == "30.00"
    assert a["google_product_category"] == "Apparel & Accessories > Clothing"
    assert (a["color"], a["size"], a["custom_label_0"], a["link"]) == (
        "Red, Blue",
        "S, M",
        "summer",
        "https://shop.example/tee?v=red-s",
    )
    assert json.loads(a["gtin"]) == ["00012345600012", "00012345600029"]
    assert json.loads(a["variant_prices"]) == ["12.00", "22.00"]
    assert (mug.sku, mug.price, mug.currency, mug.in_stock) == ("MUG-1", Decimal("1299"), "JPY", False)
    assert mug.description == "Holds 350 ml & keeps it warm." and mug.attributes["availability"] == "preorder"
    assert mug.category is None and mug.attributes["mpn"] == "MG-350"


def test_google_atom_and_gzip() -> None:
    atom = """<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
  <title>Shop</title>
  <entry>
    <g:id>LAMP-1</g:id>
    <title>Desk Lamp</title>
    <summary>Brass.</summary>
    <link href="https://shop.example/lamp"/>
    <g:image_link>https://cdn.example/lamp.jpg</g:image_link>
    <g:price>45 EUR</g:price>
    <g:availability>in_stock</g:availability>
  </entry>
  <entry>
    <title>No id</title>
    <g:price>oops</g:price>
  </entry>
</feed>"""
    catalog = read(gzip.compress(atom.encode()), "feed.xml.gz")
    [lamp] = catalog.records
    assert (lamp.sku, lamp.title, lamp.description, lamp.price, lamp.currency) == (
        "LAMP-1",
        "Desk Lamp",
        "Brass.",
        Decimal("45.00"),
        "EUR",
    )
    assert lamp.attributes["link"] == "https://shop.example/lamp"
    [error] = catalog.errors
    assert (error.row, error.field) == (13, "id") and "item 2" in error.message


def test_google_tsv_feed() -> None:
    header = "id\ttitle\tdescription\tlink\timage_link\tadditional_image_link\tprice\tsale_price\tavailability\tbrand"
    rows = [
        "CH-1\tOak Chair\tSolid oak.\thttps://s.example/ch\ta.jpg\tb.jpg,c.jpg\t120.00 USD\t\tin stock\tNordic",
        "CH-2\tPine Chair\t\t\td.jpg\t\t80.00 USD\t95.00 USD\tbackorder\tNordic",
        "\tNo id\t\t\te.jpg\t\t1.00 USD\t\tin stock\t",
        "CH-3\tBad\t\t\tf.jpg\t\t9.00 USD\t\tsomeday\t",
    ]
    catalog = read(("\n".join([header, *rows]) + "\n").encode(), "products.txt")
    assert catalog.format == "google-tsv"
    one, two = catalog.records
    assert one.images == ("a.jpg", "b.jpg", "c.jpg") and one.price == Decimal("120.00")
    assert two.price == Decimal("80.00") and not two.in_stock  # a higher sale price is no sale
    assert sorted((e.row, e.field) for e in catalog.errors) == [(4, "id"), (5, "availability")]
    assert catalog.unknown_sku_lines == [4] and catalog.prune_problem() is not None


# -- WooCommerce ------------------------------------------------------------------------------------
def woo_csv(rows: list[dict[str, str]]) -> bytes:
    """As WooCommerce's exporter writes it: a UTF-8 BOM, every header quoted where it has a space."""
    out = io.StringIO()
    writer = csv.DictWriter(out, WOO_HEADER, restval="", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows(rows)
    return b"\xef\xbb\xbf" + out.getvalue().encode()


def test_woocommerce_variable_products_and_variations() -> None:
    parent = {
        "ID": "44",
        "Type": "variable, featured",
        "SKU": "woo-vneck-tee",
        "Name": "V-Neck T-Shirt",
        "Published": "1",
        "Is featured?": "1",
        "Visibility in catalog": "visible",
        "Short description": "This is a variable product.",
        "Description": "<p>Soft &amp; light.</p>",
        "In stock?": "1",
        "Categories": "Clothing > Tshirts, Sale",
        "Tags": "tee, summer",
        "Images": "https://w.example/vneck-1.jpg, https://w.example/vneck-2.jpg",
        "Brands": "Woo",
        "Attribute 1 name": "Color",
        "Attribute 1 value(s)": "Blue, Green, Red",
        "Attribute 1 visible": "1",
        "Attribute 1 global": "1",
    }
    variation = {
        "Type": "variation",
        "Published": "1",
        "Visibility in catalog": "visible",
        "Tax status": "taxable",
        "Attribute 1 name": "Color",
        "Attribute 1 global": "1",
    }
    rows = [
        parent,
        {**variation, "ID": "76", "SKU": "woo-vneck-tee-red", "Name": "V-Neck T-Shirt - Red", "In stock?": "0",
         "Regular price": "20", "Parent": "woo-vneck-tee", "Attribute 1 value(s)": "Red",
         "GTIN, UPC, EAN, or ISBN": "5901234123457"},
        {**variation, "ID": "77", "SKU": "woo-vneck-tee-green", "Name": "V-Neck T-Shirt - Green", "In stock?": "1",
         "Regular price": "20", "Sale price": "18", "Parent": "id:44", "Attribute 1 value(s)": "Green",
         "Images": "https://w.example/vneck-green.jpg"},
        {**variation, "ID": "78", "SKU": "woo-vneck-tee-blue", "Published": "0", "Regular price": "5",
         "Parent": "id:44", "Attribute 1 value(s)": "Blue"},
        {"ID": "46", "Type": "simple", "SKU": "", "Name": "Hoodie with Logo", "Published": "1",
         "Visibility in catalog": "visible", "Description": "Plain text\nover two lines", "In stock?": "backorder",
         "Regular price": "45", "Sale price": "42", "Categories": "Clothing > Hoodies"},
        {"ID": "47", "Type": "simple", "SKU": "woo-draft", "Name": "Draft", "Published": "-1", "Regular price": "1"},
        {"ID": "48", "Type": "simple", "SKU": "woo-hidden", "Name": "Hidden", "Published": "1",
         "Visibility in catalog": "hidden", "Regular price": "1"},
        {**variation, "ID": "99", "SKU": "orphan-red", "Regular price": "3", "Parent": "id:12"},
    ]  # fmt: skip
    catalog = read(woo_csv(rows), "wc-product-export-1-1-2025.csv")
    assert catalog.format == "woocommerce" and catalog.unpublished == 2
    tee, hoodie = catalog.records
    assert (tee.sku, tee.title, tee.brand, tee.category) == ("woo-vneck-tee", "V-Neck T-Shirt", "Woo", "Tshirts")
    assert tee.description == "This is a variable product.\n\nSoft & light."
    assert tee.price == Decimal("18.00") and tee.in_stock  # green is on sale and in stock; blue is disabled
    assert tee.images == (
        "https://w.example/vneck-1.jpg",
        "https://w.example/vneck-2.jpg",
        "https://w.example/vneck-green.jpg",
    )
    a = tee.attributes
    assert (a["category_path"], a["other_categories"], a["color"]) == ("Clothing > Tshirts", "Sale", "Red, Green")
    assert json.loads(a["variant_skus"]) == ["woo-vneck-tee-red", "woo-vneck-tee-green"]
    assert a["gtin"] == "5901234123457" and a["tags"] == "tee, summer"
    assert (hoodie.sku, hoodie.price, hoodie.in_stock) == ("id:46", Decimal("42.00"), False)
    assert hoodie.description == "Plain text\nover two lines"
    [orphan] = catalog.errors
    assert (orphan.row, orphan.field, orphan.sku) == (10, "Parent", "orphan-red")  # the hoodie takes two lines
    assert {"orphan-red", "woo-vneck-tee-blue"} <= catalog.seen_skus


# -- detection and refusals -------------------------------------------------------------------------
def test_shoplens_files_are_read_as_before() -> None:
    # a ShopLens CSV that happens to have platform-like columns is still a ShopLens CSV
    catalog = read(b"sku,title,id,image_link,handle,variant sku\nA,Chair,1,a.jpg,h,v\n")
    assert catalog.format == "shoplens" and catalog.records[0].attributes["handle"] == "h"
    assert read(gzip.compress(b'{"sku": "A", "title": "Chair"}\n'), "cat.jsonl.gz").records[0].sku == "A"
    assert catalog_format("feed.xml.gz") == "csv" and catalog_format("x.ndjson.gz") == "jsonl"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"<!DOCTYPE html>\n<html><body><form>Log in</form></body></html>", "looks like an HTML page"),
        (b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', "HTML page"),
        (RSS.format(**FEED_IMAGES).encode()[:900], "not well-formed XML (line"),
        (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaa">]><rss>&a;</rss>', "DOCTYPE"),
        (b'<?xml version="1.0"?><urlset><url><loc>x</loc></url></urlset>', "root <urlset>"),
        (b'<rss version="2.0"><channel><item><title>Blog post</title></item></channel></rss>', "g: fields"),
        (b'<rss xmlns:g="http://base.google.com/ns/1.0"><channel/></rss>', "no <item> or <entry>"),
        (gzip.compress(b"id\ttitle\timage_link\n")[:-6], "gzip file cut short"),
        (gzip.compress(b"id\ttitle\timage_link\n")[:10] + b"\xff" * 20, "damaged gzip"),
    ],
)
def test_feeds_that_are_no_catalog_are_refused_in_one_line(data: bytes, message: str) -> None:
    with pytest.raises(CatalogError, match="[^\n]*" + message.replace("(", r"\(").replace("<", "<")) as caught:
        read(data, "feed.xml")
    assert "\n" not in caught.value.message and caught.value.code == "bad_catalog"


def test_gzip_bombs_are_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.readers

    monkeypatch.setattr(ingest.readers, "MAX_CATALOG_BYTES", 1024)
    with pytest.raises(CatalogError, match="unpacks to more than"):
        read(gzip.compress(b"sku,title\n" + b"A,B\n" * 10_000), "big.csv.gz")


def test_mapping_helpers() -> None:
    assert category_leaf("Home > Furniture > Chairs") == "Chairs" and category_leaf("Chairs") == "Chairs"
    assert split_list(r"Music\, Films > DVD, Books") == ["Music, Films > DVD", "Books"]
    assert html_to_text("a<br>b<div>c</div>&eacute;<style>x</style>") == "a\nb\n\nc\n\né"
    assert html_to_text("5 < 6 & plain\ntext") == "5 < 6 & plain\ntext"


# -- end to end -------------------------------------------------------------------------------------
def test_shopify_and_google_feeds_ingest_and_filter_by_any_variant_price(app: ShopLens, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shop.mkdir()
    for seed, name in enumerate(("s1.jpg", "s2.jpg", "s3.jpg", "red.jpg", "blue.jpg", "mug.jpg")):
        product_photo(100 + seed).save(shop / name)
    (shop / "products_export.csv").write_bytes(shopify_csv(shirt_rows()))
    feed = RSS.format(red="red.jpg", back="red.jpg", side="red.jpg", blue="blue.jpg", mug="mug.jpg")
    (shop / "feed.xml").write_text(feed)
    ingestor = ingestor_for(app)
    first = ingestor.ingest(read_catalog(shop / "products_export.csv"))
    second = ingestor.ingest(read_catalog(shop / "feed.xml"))
    assert first.status == second.status == "succeeded", (first.errors, second.errors)
    assert (first.counts.new, second.counts.new) == (1, 2)

    def skus(low: float | None, high: float | None, photo: str = "s1.jpg") -> list[str]:
        from PIL import Image

        request = SearchRequest(
            image=Image.open(shop / photo).convert("RGB"),
            top_k=10,
            filters=SearchFilters(min_price=low, max_price=high),
        )
        return sorted(h.sku for h in app.search.search(request).hits)

    assert skus(None, None) == ["MUG-1", "TEE", "linen-shirt"]
    assert skus(20, 30) == ["TEE", "linen-shirt"]  # 25.00 (shirt M/L) and 22.00 (blue tee): not the lowest
    assert skus(13, 16) == ["linen-shirt"]
    assert skus(1000, None) == ["MUG-1"]
    shirt = app.search.search(SearchRequest(text="LS-M", top_k=3)).hits[0]  # a variant SKU is a code
    assert shirt.sku == "linen-shirt" and shirt.price == 15.0
    # unchanged files: nothing rewritten
    assert ingestor.ingest(read_catalog(shop / "products_export.csv")).counts.unchanged == 1


@pytest.mark.parametrize("backend", ["edge", "qdrant-local"])
def test_both_backends_filter_a_price_list_by_any_element(backend: str, tmp_path: Path) -> None:
    """The payload carries every variant's price; a range holding only a dearer variant matches."""
    import numpy as np

    from ingest.sync import payload_of
    from services.catalog.models import Product
    from services.vectors.base import IMAGE, PointData, PointFilter
    from services.vectors.edge import EdgeBackend, close_shards
    from services.vectors.qdrant import QdrantBackend, close_local_clients, local_client

    shirt = Product(sku="shirt", price=Decimal("15.00"), attributes={"variant_prices": '["15.00", "25.00", null]'})
    mug = Product(sku="mug", price=Decimal("12.00"), attributes={"variant_prices": '"not ours"'})
    assert payload_of(shirt)["price"] == [15.0, 25.0] and payload_of(mug)["price"] == 12.0
    store = QdrantBackend(local_client(tmp_path / "q"), "c") if backend != "edge" else EdgeBackend(tmp_path / "e", "c")
    try:
        store.ensure({IMAGE: 4})
        vector = np.array([1, 0, 0, 0], dtype=np.float32)
        points = [
            PointData(f"00000000-0000-4000-8000-00000000000{i}", IMAGE, vector, {**payload_of(p), "kind": IMAGE})
            for i, p in enumerate((shirt, mug))
        ]
        store.upsert(points)
        for low, high, want in ((20, 30, ["shirt"]), (11, 13, ["mug"]), (None, 14, ["mug"]), (26, None, [])):
            flt = PointFilter(kind=IMAGE, min_price=low, max_price=high)
            got = sorted(h.payload["sku"] for h in store.search_grouped(vector, IMAGE, flt, 5))
            assert got == want == sorted(str(p.payload["sku"]) for p in points if flt.matches(p.payload))
    finally:
        close_shards()
        close_local_clients()

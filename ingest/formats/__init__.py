"""The catalogs merchants already have, recognised by what they hold rather than by their name.

A shop's export keeps its name ("products_export_1.csv", "feed.txt", a URL without a suffix),
so the content decides: gzip by its magic bytes, a Google Merchant Center feed by its XML root and
namespace or by its header, Shopify and WooCommerce exports by the columns only they write. A
file with ShopLens' own `sku` and `title` columns is always read as today; anything else that is
no platform's export falls through to the ShopLens readers and their messages.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.formats.mapping import Feed, to_catalog

if TYPE_CHECKING:
    from ingest.readers import Catalog

GZIP_MAGIC = b"\x1f\x8b"
# header columns (lower case) each platform always writes, and ShopLens' own, which win
_SIGNATURES = (
    ("shopify", frozenset({"handle", "title", "variant sku"})),
    ("woocommerce", frozenset({"id", "type", "sku", "name", "regular price"})),
    ("google-tsv", frozenset({"id", "title", "image_link"})),
)
_SHOPLENS = frozenset({"sku", "title"})
_HTML = re.compile(rb"<!doctype\s+html|<html[\s>]", re.IGNORECASE)


def gunzip(data: bytes, name: str, limit: int) -> bytes:
    """The bytes a gzip-compressed catalog holds, at most `limit` of them (a small file must not
    unpack into gigabytes); anything that is no gzip stream is returned as it is."""
    from ingest.readers import CatalogError

    if not data.startswith(GZIP_MAGIC):
        return data
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        out = inflate.decompress(data, limit + 1)
        if len(out) > limit or inflate.unconsumed_tail:
            raise CatalogError(f"the catalog unpacks to more than {limit // 2**20} MiB: {name}")
        out += inflate.flush()
    except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise CatalogError(f"the catalog is a damaged gzip file ({exc}): {name}") from None
    if not inflate.eof:
        raise CatalogError(f"the catalog is a gzip file cut short (it ends before its data does): {name}")
    return out


def platform_of(data: bytes) -> str | None:
    """Which platform's export `data` is, from its first bytes; None for ShopLens' own formats
    (and for anything else, which their readers then refuse with their own messages)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return "google-xml"  # its reader refuses HTML pages and XML that is no product feed
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    for delimiter in ("\t", ",", ";"):
        try:
            cells = next(csv.reader([first], delimiter=delimiter), [])
        except csv.Error:
            continue
        names = {c.strip().lower() for c in cells}
        if _SHOPLENS <= names:
            return None
        google = {n.removeprefix("g:").replace(" ", "_") for n in names}
        for platform, columns in _SIGNATURES:
            if columns <= (google if platform == "google-tsv" else names):
                return platform
    return None


def looks_like_html(data: bytes) -> bool:
    return _HTML.search(data[:2048]) is not None


def read_platform(platform: str, data: bytes, name: str, base_dir: Path | None) -> Catalog:
    """A platform's export as a Catalog: one product per group of variants."""
    from ingest.formats import google, shopify, woocommerce

    readers: dict[str, Callable[[bytes, str], Feed]] = {
        "google-xml": google.read_xml,
        "google-tsv": google.read_tsv,
        "shopify": shopify.read,
        "woocommerce": woocommerce.read,
    }
    return to_catalog(readers[platform](data, name), name, base_dir)

"""Fixtures for the Streamlit pages: a real ShopLens server process, and the pages pointed at it.

AppTest runs the pages in this process, so what the pages read is this process's environment:
SHOPLENS_SERVER_URL names the module's server (a MonkeyPatch that lasts as long as the module).
The server is another process with a home of its own; the pages never open its stores.
"""

from __future__ import annotations

import io
import re
import shutil
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from server.client import ShopLensClient
from tests.support.catalog import product_photo, write_catalog
from tests.support.server_process import PASSWORD, ServerProcess, running_server

ROOT = Path(__file__).resolve().parents[2]
STOREFRONT = str(ROOT / "ui" / "storefront.py")
ADMIN = str(ROOT / "ui" / "admin.py")
PRODUCTS = 8

__all__ = [
    "ADMIN",
    "PASSWORD",
    "PRODUCTS",
    "ROOT",
    "STOREFRONT",
    "Shop",
    "copy_home",
    "english_left",
    "pages_use",
    "png_bytes",
    "shop_words",
    "texts",
]


@dataclass
class Shop:
    server: ServerProcess
    catalog: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def home(self) -> Path:
        return self.server.home

    def photo(self, i: int) -> bytes:
        """The exact bytes of product i's catalog photo (a shopper uploading the shop's own image)."""
        return (self.catalog.parent / "images" / f"p{i}-0.jpg").read_bytes()

    def client(self, admin: bool = False) -> ShopLensClient:
        return self.server.client(admin=admin)


@pytest.fixture(autouse=True)
def _fresh_page_caches() -> Iterator[None]:
    """Streamlit's caches are process-wide; a test must not see another test's thumbnails or client."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def pages_use(mp: pytest.MonkeyPatch, url: str | None, home: Path) -> None:
    """Point the pages of this process at a server (none: `url` None); `home` is only where a
    page would look for a server file (server-<host>.json), so it must not be a real one."""
    mp.setenv("SHOPLENS_HOME", str(home))
    if url is None:
        mp.delenv("SHOPLENS_SERVER_URL", raising=False)
    else:
        mp.setenv("SHOPLENS_SERVER_URL", url)
    mp.delenv("SHOPLENS_ADMIN_PASSWORD", raising=False)  # the pages must not need it: the server has it


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[Shop]:
    """A server with PRODUCTS synthetic products ingested through its API; the module's pages use it."""
    base = tmp_path_factory.mktemp("ui-shop")
    catalog = write_catalog(base / "catalog", PRODUCTS)
    with running_server(base / "server", openclip_env, catalog=catalog) as server, pytest.MonkeyPatch.context() as mp:
        pages_use(mp, server.url, base / "pages-home")
        yield Shop(server, catalog)


@pytest.fixture
def empty_server(tmp_path: Path, openclip_env: dict[str, str]) -> Iterator[ServerProcess]:
    """A second server, over an empty home and without an admin password, for one test."""
    with running_server(tmp_path / "empty", openclip_env, password=None) as server:
        yield server


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a server's home: its SQL catalog and photos, but no vectors and no locks (a
    server owns its folder), as a home looks to a server whose search model has changed."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("server-*.json", "*.lock", "*.pid", "vectors"))
    return target


def png_bytes(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    out = io.BytesIO()
    product_photo(seed, size).save(out, "PNG")
    return out.getvalue()


def texts(at) -> str:
    """Everything the page shows as text (markdown, captions, alerts, titles), one string."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    return "\n".join(parts)


@cache
def translated_away(language: str = "zh") -> frozenset[str]:
    """The English words of the pages' messages that their translation leaves out ("View", "product"
    of "View product"), lowercased: none of them belongs on a page shown in `language`. Words a
    translation keeps (CSV, ZIP, `shoplens serve`) and the `{fields}` are not among them."""
    from babel.messages.pofile import read_po

    def words(text: str) -> set[str]:
        literal = "".join(part for part, *_ in string.Formatter().parse(text))
        return {w.lower() for w in re.findall(r"[A-Za-z]{2,}", literal)}

    with (ROOT / "ui" / "locales" / language / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale=language)
    away: set[str] = set()
    for message in catalog:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        kept = set().union(*map(words, strings))
        away |= set().union(*map(words, ids)) - kept
    return frozenset(away)


def shop_words(client: ShopLensClient) -> list[str]:
    """What the shop's own data puts on a page, in whatever language its catalog is written:
    titles, descriptions, categories, brands, SKUs, details, the search model's name."""
    found = [client.health().embedder]
    for product in client.products(limit=100).products:
        details = client.product(product.sku)
        found += [details.sku, details.title, details.description or "", details.category or "", details.brand or ""]
        for key, value in details.attributes.items():
            found += [key.replace("_", " ").capitalize(), str(value)]
    return [w for w in found if w]


def english_left(text: str, data: Iterable[str] = (), language: str = "zh") -> list[str]:
    """The English words of the pages' own messages left in `text` once the shop's `data` is taken
    out: a page in `language` shows none."""
    for item in sorted(set(data), key=len, reverse=True):
        text = text.replace(item, " ")
    return [w for w in re.findall(r"[A-Za-z]{2,}", text) if w.lower() in translated_away(language)]

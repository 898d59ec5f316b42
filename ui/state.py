"""What both pages share: the way to the ShopLens server, and a few display helpers.

The pages are clients of the server's HTTP API, like the command line in another shell: they
open no store and load no model, so a page starts in a moment and several page processes (or a
page on another machine) see one catalog. Everything here is display or transport, no business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import streamlit as st
from babel.core import UnknownLocaleError
from babel.lists import format_list
from babel.numbers import format_currency, format_decimal, get_currency_symbol

import services.images  # registers the image errors' wording for `ApiError.user_message`
from server import schemas
from server.client import ApiError, ServerUnavailable, ShopLensClient, find_server
from services.errors import ShopLensError
from services.prices import price_decimals
from services.settings import Settings
from ui.i18n import N_, SOURCE_LANGUAGE, _, babel_locale, current_language, ngettext, number

log = logging.getLogger("shoplens.ui")
THUMB_SIZE = 480  # one of the sizes the API makes: 96, 240, 480, 720, 1024
SERVER_NOT_RUNNING = N_("The ShopLens server is not running: start it with `shoplens serve`.")


def current_settings() -> Settings:
    """Settings from the environment (and .env) as they are now; cheap to build. The pages read
    only display defaults from them; the server's own settings are the authority."""
    return Settings()


def server_url() -> str | None:
    """Where the server listens: `SHOPLENS_SERVER_URL` (set by `shoplens serve` for its pages),
    else the server this home's `server.json` announces. Its local token is not used: shoppers
    need none, and an admin types the password."""
    found = find_server(current_settings())
    return found[0] if found is not None else None


@st.cache_resource(show_spinner=False)
def client_for(url: str) -> ShopLensClient:
    """One public client per process and server URL: its connection pool is shared by sessions."""
    return ShopLensClient(url)


def server_or_stop() -> tuple[ShopLensClient, schemas.Health]:
    """The shared client and the server's health right now, or a clear message and the end of
    this page run when no server answers (never a traceback)."""
    url = server_url()
    if url is None:
        st.error(_(SERVER_NOT_RUNNING))
        st.caption(_("No server was found: set SHOPLENS_SERVER_URL to its address, or start one for this data folder."))
        st.stop()
    try:
        client = client_for(url)
        return client, client.health()
    except ServerUnavailable as exc:
        st.error(_(SERVER_NOT_RUNNING))
        st.caption(exc.user_message)
    except Exception as exc:  # a server that answers, but wrongly
        st.error(friendly_error(exc))
    st.stop()
    raise AssertionError("unreachable: st.stop() ends the run")


def friendly_error(exc: BaseException) -> str:
    """A sentence for a person: ShopLens' own errors (the server's included) say what went wrong;
    anything else is logged here and named only by its class."""
    if isinstance(exc, ShopLensError):
        return exc.user_message
    log.exception("unexpected error in the pages", exc_info=exc)
    return _("Something went wrong ({error}). Please try again; if it keeps happening, tell the shop.").format(
        error=exc.__class__.__name__
    )


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 404


def product_or_explain(
    client: ShopLensClient, sku: str, say_missing: Callable[[str], object], missing: str
) -> schemas.Product | None:
    """The product, or None once the page says why not: `say_missing(missing)` for an unknown SKU
    (`st.info`, `st.warning`), an error for anything else."""
    try:
        return client.product(sku)
    except Exception as exc:
        if is_not_found(exc):
            say_missing(missing)
        else:
            st.error(friendly_error(exc))
        return None


@st.cache_data(show_spinner=False, ttl=60, max_entries=2048)
def _facet_counts(base_url: str, stamp: tuple[int, int], filters_json: str) -> tuple[dict[str, int], dict[str, int]]:
    """One `GET /facets`: products per category and per brand, each under the other filters;
    shared by sessions for a minute, and `stamp` (the catalog's size) starts afresh after an ingest."""
    facets = client_for(base_url).facets(filters=schemas.Filters.model_validate_json(filters_json))
    return {f.value: f.count for f in facets.category_counts}, {f.value: f.count for f in facets.brand_counts}


def facet_counts(
    client: ShopLensClient, stamp: tuple[int, int], filters: schemas.Filters
) -> tuple[dict[str, int], dict[str, int]]:
    """Products per category (under the brand, price and stock filters) and per brand (under the
    category, price and stock filters), counted by the vector engine."""
    return _facet_counts(client.base_url, stamp, filters.model_dump_json())


@st.cache_data(show_spinner=False, max_entries=4096)
def _image_bytes(base_url: str, image_url: str, size: int) -> bytes:
    """A square thumbnail from the API. Images are named by their content hash, so a URL's bytes
    never change: cached for the process, shared by every session. Errors are not cached."""
    return client_for(base_url).image(image_url, size=size)


def show_product_image(client: ShopLensClient, image_url: str | None, size: int = THUMB_SIZE) -> None:
    """The product photo as a square thumbnail, or a grey "no photo" square in its place."""
    data = None
    if image_url:
        try:
            data = _image_bytes(client.base_url, image_url, size)
        except ShopLensError as exc:  # a photo that cannot be fetched must not break the page
            log.warning("no thumbnail for %s: %s", image_url, exc.message)
    if data is None:
        missing = _("no photo")
        st.markdown(
            "<div style='aspect-ratio:1/1;background:#f3f4f6;border-radius:8px;display:flex;"
            f"align-items:center;justify-content:center;color:#9ca3af'>{missing}</div>",
            unsafe_allow_html=True,
        )
        return
    st.image(data, width="stretch")


def shop_currency() -> str | None:
    """The shop's currency (`SHOPLENS_CURRENCY`), for prices whose catalog row names none."""
    return (current_settings().currency or "").upper() or None


def format_price(price: float | None, currency: str | None, locale: str | None = None) -> str:
    """A price as a shopper of `locale` (default: the page's language) reads it: "$18.99",
    "€35.00", "KWD1.250", in Chinese "¥18.99", "US$18.99"; in the product's currency, else the
    shop's; without either, just the number ("18.99"). The one place the pages format a price."""
    locale = locale or babel_locale()
    if price is None:
        return _("price on request")
    code = (currency or "").strip().upper() or shop_currency()
    try:
        if code:
            return format_currency(price, code, locale=locale)
        return format_decimal(price, format="#,##0." + "0" * price_decimals(price, None), locale=locale)
    except (ValueError, LookupError, UnknownLocaleError):  # an unknown locale: the number and the code, plainly
        return f"{price:,.2f} {code or ''}".strip()


def currency_symbol(currency: str | None, locale: str | None = None) -> str | None:
    """The symbol a shopper of `locale` (default: the page's language) knows a currency by
    ("$", "€"; "US$" in Chinese), for labels."""
    if not currency:
        return None
    locale = locale or babel_locale()
    try:
        return get_currency_symbol(currency.upper(), locale=locale)
    except (ValueError, LookupError, UnknownLocaleError):
        return currency.upper()


def catalog_size(counts: schemas.Counts) -> str:
    """ "Catalog: 1,204 products, 3,810 photos", in the page's language (both pages say it)."""
    products = ngettext("{count} product", "{count} products", counts.products).format(count=number(counts.products))
    photos = ngettext("{count} photo", "{count} photos", counts.images).format(count=number(counts.images))
    return _("Catalog: {products}, {photos}").format(products=products, photos=photos)


def photo_formats() -> str:
    """The formats a shopper's photo may be in, listed as the page's language lists ("JPEG, PNG,
    or WebP"; "JPEG、PNG或WebP")."""
    labels = list(dict.fromkeys(f.label for f in services.images.IMAGE_FORMATS.values() if f.photo))
    return format_list(labels, style="or", locale=babel_locale())


def uploader_words(key: str, types: list[str], max_mb: int | None = None) -> None:
    """Put the words Streamlit draws itself in a file picker (its button, its "200MB per file •
    CSV" line) into the page's language. Streamlit has no setting for them, so a style rule
    scoped to the picker with `key` hides its English and shows ours in its place; in English
    there is nothing to do. Call it beside the picker."""
    if current_language() == SOURCE_LANGUAGE:
        return
    size = max_mb if max_mb is not None else int(st.get_option("server.maxUploadSize"))
    shown = [t.upper() for t in types if not (t == "jpeg" and "jpg" in types)]  # as Streamlit lists them
    note = _("{size} per file • {types}").format(size=f"{size}MB", types=", ".join(shown))
    picker = f".st-key-{key} [data-testid='stFileUploaderDropzone']"
    button = _css_string(_("Upload"))
    st.html(
        "<style>"
        f"{picker} button [data-testid='stMarkdownContainer'] p {{ display: none; }}"
        f"{picker} button [data-testid='stMarkdownContainer']::after {{ content: {button}; }}"
        f"{picker} [data-testid='stFileUploaderDropzoneInstructions'] span {{ font-size: 0; }}"
        f"{picker} [data-testid='stFileUploaderDropzoneInstructions'] span::after "
        f"{{ content: {_css_string(note)}; font-size: 0.875rem; }}"
        "</style>"
    )


def streamlit_words() -> None:
    """Put the words Streamlit shows on every page into the page's language: the keyboard's
    "Skip to main content" link (see `uploader_words` for the way). Call it once a page run."""
    if current_language() == SOURCE_LANGUAGE:
        return
    link = "[data-testid='stSkipToContent']"
    words = _css_string(_("Skip to main content"))
    st.html(f"<style>{link} {{ font-size: 0; }}{link}::after {{ content: {words}; font-size: 1rem; }}</style>")


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("<", "\\3c ") + '"'


def escape(text: str) -> str:
    """Catalog text shown as Markdown: neutralise the characters Markdown would interpret."""
    for ch in "\\`*_{}[]<>#|~$":
        text = text.replace(ch, "\\" + ch)
    return text

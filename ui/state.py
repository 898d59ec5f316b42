"""Process-wide resources for the Streamlit pages, and the few display helpers both pages share.

One ShopLens app per process and per configuration (tests switch SHOPLENS_HOME between runs; a
served storefront has one). Nothing here searches or ingests: that lives in services/ and ingest/.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import streamlit as st
from PIL import Image, ImageOps
from pydantic import SecretStr

from server.auth import LoginThrottle
from services.context import ShopLens
from services.errors import ShopLensError
from services.settings import Settings

log = logging.getLogger("shoplens.ui")
THUMB_SIZE = 480


def current_settings() -> Settings:
    """Settings from the environment (and .env) as they are now; cheap to build."""
    return Settings()


def _settings_key(settings: Settings) -> str:
    items = []
    for name, value in sorted(settings.model_dump().items()):
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        items.append(f"{name}={value!r}")
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


@st.cache_resource(show_spinner=False)
def _app(key: str, _settings: Settings) -> ShopLens:  # noqa: ARG001 - `key` is the cache key
    return ShopLens(_settings)


def get_app() -> ShopLens:
    """The ShopLens app of this process for the current settings (built once, parts built lazily)."""
    settings = current_settings()
    return _app(_settings_key(settings), settings)


@st.cache_resource(show_spinner=False)
def login_throttle() -> LoginThrottle:
    """One throttle per process: wrong admin passwords are counted across all sessions."""
    return LoginThrottle()


def friendly_error(exc: BaseException) -> str:
    """A sentence for a person: ShopLens' own errors say what went wrong; anything else is logged."""
    if isinstance(exc, ShopLensError):
        return exc.user_message
    log.exception("unexpected error in the storefront", exc_info=exc)
    return f"Something went wrong ({exc.__class__.__name__}). Please try again; if it keeps happening, tell the shop."


def app_or_stop() -> ShopLens:
    """The app, or a friendly error and the end of this page run."""
    try:
        app = get_app()
        app.catalog  # noqa: B018 - opens the database now so its errors show here
        return app
    except Exception as exc:  # shown to the person, never as a traceback
        st.error(friendly_error(exc))
        st.stop()
        raise  # unreachable: st.stop() ends the run


@st.cache_data(show_spinner=False, max_entries=4096)
def thumbnail(path: str, size: int = THUMB_SIZE) -> bytes | None:
    """A square JPEG of a product photo, padded on white so the whole product stays visible."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size * 2, size * 2))
            img = ImageOps.exif_transpose(img) or img
            if img.mode != "RGB":
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba).convert("RGB")
            square = ImageOps.pad(img, (size, size), color=(255, 255, 255))
    except (OSError, ValueError):
        return None
    out = io.BytesIO()
    square.save(out, "JPEG", quality=85)
    return out.getvalue()


def show_product_image(path: Path | str | None, size: int = THUMB_SIZE) -> None:
    data = thumbnail(str(path), size) if path else None
    if data is None:
        st.markdown(
            "<div style='aspect-ratio:1/1;background:#f3f4f6;border-radius:8px;display:flex;"
            "align-items:center;justify-content:center;color:#9ca3af'>no photo</div>",
            unsafe_allow_html=True,
        )
        return
    st.image(data, width="stretch")


def format_price(price: float | None, currency: str | None) -> str:
    if price is None:
        return "price on request"
    return f"{price:,.2f} {currency or ''}".strip()

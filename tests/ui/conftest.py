"""Fixtures for the Streamlit pages: a pre-ingested home selected through SHOPLENS_* variables.

AppTest runs the pages in this process, so the settings the pages read are this process's
environment; each module gets its own home and a MonkeyPatch that lasts as long as the module.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.catalog import product_photo, write_catalog

ROOT = Path(__file__).resolve().parents[2]
STOREFRONT = str(ROOT / "ui" / "storefront.py")
ADMIN = str(ROOT / "ui" / "pages" / "admin.py")
PASSWORD = "correct horse battery staple"
PRODUCTS = 8


@dataclass
class Shop:
    home: Path
    catalog: Path
    env: dict[str, str]

    def photo(self, i: int) -> bytes:
        """The exact bytes of product i's catalog photo (a shopper uploading the shop's own image)."""
        return (self.catalog.parent / "images" / f"p{i}-0.jpg").read_bytes()


def shop_env(openclip_env: dict[str, str], home: Path, password: str | None = PASSWORD) -> dict[str, str]:
    env = {**openclip_env, "SHOPLENS_HOME": str(home), "SHOPLENS_INGEST_BATCH_SIZE": "8", "SHOPLENS_TORCH_THREADS": "1"}
    if password is not None:
        env["SHOPLENS_ADMIN_PASSWORD"] = password
    return env


def ingest_catalog(env: dict[str, str], catalog: Path) -> None:
    """Ingest in this process, then release the database and the Qdrant folder."""
    from ingest.pipeline import ingestor_for
    from ingest.readers import read_catalog
    from services.context import ShopLens
    from services.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        app = ShopLens(Settings(_env_file=None))
        try:
            result = ingestor_for(app).ingest(read_catalog(catalog), trigger="test")
            assert result.status == "succeeded", result.summary()
        finally:
            app.catalog.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[Shop]:
    """A home with PRODUCTS synthetic products ingested; the module's environment points at it."""
    base = tmp_path_factory.mktemp("ui-shop")
    catalog = write_catalog(base / "catalog", PRODUCTS)
    env = shop_env(openclip_env, base / "home")
    ingest_catalog(env, catalog)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield Shop(base / "home", catalog, env)


def png_bytes(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    out = io.BytesIO()
    product_photo(seed, size).save(out, "PNG")
    return out.getvalue()


def texts(at) -> str:  # noqa: ANN001 - AppTest
    """Everything the page shows as text (markdown, captions, alerts, titles), one string."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    return "\n".join(parts)

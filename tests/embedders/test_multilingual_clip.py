"""Multilingual open_clip: the language setting, and a CLIP whose text tower is XLM-RoBERTa.

The real `xlm-roberta-base-ViT-B-32` weights cannot be downloaded here, so a tiny model of the
same shape (a Hugging Face XLM-RoBERTa text tower and its own tokenizer) is built at test time and
loaded through the users' local-dir path; the settings' choice of the real model is checked
through the identity, which reads open_clip's own config without loading weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from services.context import ShopLens
from services.embedders import openclip
from services.embedders.base import EmbedderUnavailable
from services.embedders.registry import get_embedder, predicted_identity
from services.search import SearchRequest
from services.settings import Settings
from tests.support.catalog import write_catalog

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_multilingual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_clip import build_tiny_multilingual_clip

    return build_tiny_multilingual_clip(tmp_path_factory.mktemp("tiny-xlmr-clip"))


def test_the_language_setting_picks_the_multilingual_model_unless_one_is_named() -> None:
    multilingual = Settings(_env_file=None, embedder="openclip", openclip_languages="multilingual")
    assert openclip.model_and_weights(multilingual) == ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")
    identity = predicted_identity(multilingual)  # from open_clip's packaged config: no weights, no torch
    assert identity is not None and identity.model == "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"
    assert identity.image_dim == identity.text_dim == 512 and identity.cross_modal
    assert openclip.needs_transformers("xlm-roberta-base-ViT-B-32") and not openclip.needs_transformers("ViT-B-32")
    named = Settings(_env_file=None, openclip_languages="multilingual", openclip_model="ViT-L-14")
    assert openclip.model_and_weights(named) == ("ViT-L-14", "laion2b_s34b_b79k")
    english = Settings(_env_file=None)
    assert openclip.model_and_weights(english) == ("ViT-B-32", "laion2b_s34b_b79k")


def test_the_multilingual_model_without_its_weights_is_unavailable_with_the_reason() -> None:
    """No hub here and nothing cached: `auto` would fall back to the offline embedder; named, it says why."""
    settings = Settings(_env_file=None, embedder="openclip", openclip_languages="multilingual", device="cpu")
    with pytest.raises(EmbedderUnavailable, match="xlm-roberta-base-ViT-B-32"):
        get_embedder(settings)


def test_a_hugging_face_text_tower_without_transformers_is_a_clear_error(monkeypatch, tiny_multilingual) -> None:
    real_find_spec = openclip.importlib.util.find_spec
    monkeypatch.setattr(
        openclip.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real_find_spec(name, *a),
    )
    openclip._load.cache_clear()
    with pytest.raises(EmbedderUnavailable, match=r"shoplens\[multilingual\]"):
        openclip.OpenClipEmbedder(f"local-dir:{tiny_multilingual}", None, "cpu")


def test_an_xlm_roberta_clip_loads_offline_and_searches_in_chinese(tiny_multilingual: Path, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        home=tmp_path / "home",
        embedder="openclip",
        openclip_model=f"local-dir:{tiny_multilingual}",
        device="cpu",
        min_score=-1.0,
    )
    app = ShopLens(settings)
    try:
        embedder = app.embedder
        assert embedder.identity == predicted_identity(settings)  # known before loading, equal after
        shoes, chair, shoes_again = embedder.embed_texts(["跑步鞋", "木头椅子", "跑步鞋"]).vectors
        np.testing.assert_allclose(shoes, shoes_again, atol=1e-5)
        assert float(shoes @ chair) < 0.999  # Chinese is tokenised into pieces, not one unknown token
        result = ingestor_for(app).ingest(read_catalog(write_catalog(tmp_path / "shop", 3)))
        assert result.status == "succeeded", result.message
        hits = app.search.search(SearchRequest(text="红色连帽衫", top_k=3)).hits
        assert len(hits) == 3  # text -> photo and text in one space, whatever the language
        photo = Image.open(tmp_path / "shop" / "images" / "p1-0.jpg")
        assert app.search.search(SearchRequest(image=photo, top_k=1)).hits[0].sku == "SKU-0001"
    finally:
        app.close()

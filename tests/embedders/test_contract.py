"""The contract every embedder keeps, run on each backend (see conftest.BACKENDS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from services.embedders import Embedder, QueryKind


def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_shapes_dtype_and_unit_norm(embedder: Embedder) -> None:
    ident = embedder.identity
    images = embedder.embed_images([photo(1), photo(2), photo(3)])
    texts = embedder.embed_texts(["red running shoes", "a wooden chair"])
    assert images.vectors.shape == (3, ident.image_dim) and images.vectors.dtype == np.float32
    assert texts.vectors.shape == (2, ident.text_dim) and texts.vectors.dtype == np.float32
    assert not images.errors and not texts.errors
    np.testing.assert_allclose(np.linalg.norm(images.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts.vectors, axis=1), 1.0, atol=1e-5)
    # distinct inputs give distinct vectors
    assert float(images.vectors[0] @ images.vectors[1]) < 0.9999
    assert float(texts.vectors[0] @ texts.vectors[1]) < 0.9999


def test_deterministic(embedder: Embedder) -> None:
    a = embedder.embed_image(photo(7))
    b = embedder.embed_image(photo(7))
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_text("blue mug"), embedder.embed_text("blue mug"), atol=1e-5)


def test_batch_equals_one_by_one(embedder: Embedder) -> None:
    images = [photo(i, (120 + 10 * i, 90)) for i in range(5)]
    batch = embedder.embed_images(images).vectors
    single = np.stack([embedder.embed_image(img) for img in images])
    np.testing.assert_allclose(batch, single, atol=2e-4)
    texts = ["lamp", "a very comfortable grey sofa for the living room", "铅笔"]
    np.testing.assert_allclose(
        embedder.embed_texts(texts).vectors, np.stack([embedder.embed_text(t) for t in texts]), atol=2e-4
    )


def test_photos_prepared_in_other_threads_embed_as_the_photos_do(embedder: Embedder) -> None:
    """An ingestion prepares each photo in its decode threads and embeds the batch in the model's:
    the vectors must be the ones `embed_images` gives the same photos, in the same order."""
    images = [photo(i, (100 + 30 * i, 140 - 10 * i)) for i in range(5)]
    with ThreadPoolExecutor(3) as pool:
        prepared = list(pool.map(embedder.prepare_image, images))
    result = embedder.embed_prepared(prepared)
    assert not result.errors
    np.testing.assert_allclose(result.vectors, embedder.embed_images(images).vectors, atol=2e-4)
    assert embedder.embed_prepared([]).vectors.shape == (0, embedder.identity.image_dim)


def test_empty_input(embedder: Embedder) -> None:
    assert embedder.embed_images([]).vectors.shape == (0, embedder.identity.image_dim)
    assert embedder.embed_texts([]).vectors.shape == (0, embedder.identity.text_dim)


def test_bad_image_fails_alone(embedder: Embedder) -> None:
    broken = Image.new("RGB", (64, 64))
    broken.load = None  # type: ignore[assignment]  # any access to its pixels raises
    result = embedder.embed_images([photo(1), broken, photo(2)])
    assert set(result.errors) == {1}, result.errors
    np.testing.assert_allclose(result.vectors[0], embedder.embed_image(photo(1)), atol=2e-4)
    np.testing.assert_allclose(result.vectors[2], embedder.embed_image(photo(2)), atol=2e-4)
    assert not result.vectors[1].any()


def test_very_long_and_non_latin_text(embedder: Embedder) -> None:
    long_text = "comfortable cotton hoodie with a kangaroo pocket " * 400
    result = embedder.embed_texts([long_text, "红色的连帽衫", "Кроссовки", "🙂 emoji", ""])
    assert not result.errors, result.errors
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert float(result.vectors[1] @ result.vectors[2]) < 0.9999


def test_query_kinds_declared(embedder: Embedder) -> None:
    kinds = embedder.supported_queries
    assert QueryKind.IMAGE_TO_IMAGE in kinds and QueryKind.TEXT_TO_TEXT in kinds
    assert (QueryKind.TEXT_TO_IMAGE in kinds) == embedder.identity.cross_modal


def test_identity_stable_across_processes(embedder: Embedder, embedder_env: dict[str, str]) -> None:
    code = (
        "import json; from services.settings import Settings; from services.embedders import get_embedder;"
        "e = get_embedder(Settings()); print(json.dumps([e.identity.key, e.identity.describe()]))"
    )
    env = {**os.environ, **embedder_env}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    key, _ = json.loads(out.stdout.strip().splitlines()[-1])
    assert key == embedder.identity.key

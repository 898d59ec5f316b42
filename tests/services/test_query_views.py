"""Object-centred query views on real Pillow photos and real embedders (packaged MobileNetV2, tiny open_clip).

Why these: the views must find a product a shopper photographed small on a busy table, must not
move an exact catalog photo off the top of its own results, and must be deterministic (the same
photo is the same query on every server).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from pydantic import SecretStr

from services.embedders.base import Embedder, EmbedderUnavailable
from services.images import ImageLimits, decode_for_model
from services.query_views import (
    MAX_VIEWS,
    Box,
    _filtered,
    best_over_views,
    default_views,
    foreground_boxes,
    largest_component,
    query_embedding,
    query_vectors,
    query_vectors_many,
    query_views,
)
from tests.support.fake_dashscope import FakeDashScope

LIMITS = ImageLimits()


def product_photo(seed: int, size: int = 400) -> Image.Image:
    """A catalog-style shot: one detailed, colourful object in the middle of a white frame."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    lo, hi = size // 5, size * 4 // 5
    body = tuple(int(v) for v in rng.integers(0, 200, 3))
    draw.rounded_rectangle((lo, lo, hi, hi), radius=size // 12, fill=body, outline=(0, 0, 0), width=4)
    for _ in range(5):
        x0, y0 = (int(v) for v in rng.integers(lo, hi - size // 6, 2))
        x1, y1 = x0 + int(rng.integers(20, size // 5)), y0 + int(rng.integers(20, size // 5))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        [draw.ellipse, draw.rectangle][int(rng.integers(0, 2))]((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0))
    for y in range(lo + 8, hi - 8, 14):  # printed stripes: texture for the network to see
        draw.line(
            (lo + 8, y, hi - 8, y + int(rng.integers(-6, 7))), fill=tuple(int(v) for v in rng.integers(0, 256, 3))
        )
    return image


def busy_backdrop(size: tuple[int, int], seed: int) -> Image.Image:
    """A cluttered table top: wood-coloured planks with grain, crumbs and a few dull objects."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys = np.arange(height, dtype=np.float32)[:, None]
    planks = (ys // 90 % 2) * 18 + 8 * np.sin(np.arange(width, dtype=np.float32)[None, :] / 7 + ys / 40)
    base = np.array([150, 110, 75], dtype=np.float32)
    pixels = base + planks[..., None] + rng.normal(0, 10, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(4, 40))
        tone = int(rng.integers(60, 140))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(tone, tone - 20, tone - 40))
    return image


def jpeg_decoded(image: Image.Image, quality: int = 70) -> Image.Image:
    """What the API hands the embedder for this photo sent as a phone JPEG."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return decode_for_model(buffer.getvalue(), LIMITS)[0]


def shopper_photo(seed: int) -> tuple[Image.Image, Box]:
    """Product `seed` pasted small (a quarter of the width) off-centre on a busy 1200x900 table, tilted 8°."""
    product = product_photo(seed).crop((70, 70, 330, 330)).rotate(8, expand=True, fillcolor=(255, 255, 255))
    product = product.resize((300, 300))
    frame = busy_backdrop((1200, 900), seed=100 + seed)
    left, top = 760, 120
    frame.paste(product, (left, top))
    truth = Box(left / 1200, top / 900, (left + 300) / 1200, (top + 300) / 900)
    return jpeg_decoded(frame), truth


@pytest.fixture(scope="module")
def offline_embedder() -> Embedder:
    pytest.importorskip("torch")
    from services.embedders.offline import OfflineEmbedder

    try:
        return OfflineEmbedder(device="cpu")
    except EmbedderUnavailable as exc:
        pytest.skip(f"offline embedder unavailable here: {exc}")


@pytest.fixture(scope="module")
def tiny_clip_embedder(tiny_clip_dir: Path) -> Embedder:
    from services.embedders.openclip import OpenClipEmbedder

    return OpenClipEmbedder(f"local-dir:{tiny_clip_dir}", None, device="cpu")


def catalog_vectors(embedder: Embedder, photos: list[Image.Image]) -> np.ndarray:
    result = embedder.embed_images([jpeg_decoded(photo, 90) for photo in photos])
    assert not result.errors
    return result.vectors


def test_finds_a_product_pasted_small_on_a_busy_table_and_crops_to_it() -> None:
    photo, truth = shopper_photo(seed=3)
    boxes = foreground_boxes(photo)
    assert boxes and boxes[0].iou(truth) >= 0.6
    views = query_views(photo)
    assert views[0] is photo and 2 <= len(views) <= MAX_VIEWS
    crop = views[1]
    assert crop.width * crop.height < 0.2 * photo.width * photo.height  # the product, not the table


def test_the_crop_looks_like_the_catalog_photo_and_finds_the_product(offline_embedder: Embedder) -> None:
    catalog = catalog_vectors(offline_embedder, [product_photo(seed) for seed in range(6)])
    for seed in range(6):  # the whole photo alone ranks another product first for half of these
        photo, _ = shopper_photo(seed)
        vectors = query_vectors(offline_embedder, photo)
        scores = vectors @ catalog.T  # (views, products)
        whole, crop = scores[0, seed], scores[1, seed]
        assert crop > whole + 0.05, f"product {seed}: the crop should look more like the catalog photo"
        assert int(np.argmax(best_over_views(scores))) == seed
        assert int(np.argmax(query_embedding(offline_embedder, photo) @ catalog.T)) == seed


@pytest.mark.parametrize("which", ["offline_embedder", "tiny_clip_embedder"])
def test_an_exact_catalog_photo_still_finds_itself_first(which: str, request: pytest.FixtureRequest) -> None:
    embedder: Embedder = request.getfixturevalue(which)
    photos = [product_photo(seed) for seed in range(6)]
    catalog = catalog_vectors(embedder, photos)
    for index, photo in enumerate(photos):
        query = jpeg_decoded(photo, 90)  # searched exactly as it was ingested
        vectors = query_vectors(embedder, query)
        assert np.allclose(vectors[0], embedder.embed_image(query), atol=1e-5)  # the whole photo comes first
        best = best_over_views(vectors @ catalog.T)
        assert int(np.argmax(best)) == index and best[index] > 0.999
        mean_scores = query_embedding(embedder, query) @ catalog.T
        assert int(np.argmax(mean_scores)) == index


def test_a_per_image_billed_embedder_sends_one_image_per_photo(fake_dashscope: FakeDashScope) -> None:
    from services.embedders.dashscope import DashScopeEmbedder

    fake_dashscope.reset()
    embedder = DashScopeEmbedder(SecretStr(fake_dashscope.api_key), base_url=fake_dashscope.base_url)
    try:
        photo, _ = shopper_photo(seed=1)
        assert len(query_views(photo)) > 1  # there is a product to crop to
        assert default_views(embedder) == 1
        vectors = query_vectors(embedder, photo)
        assert vectors.shape == (1, embedder.identity.image_dim)
        assert len(fake_dashscope.requests) == 1  # today's single request, not one per view
        assert len(query_vectors(embedder, photo, max_views=3)) > 1  # unless the caller asks for more
    finally:
        embedder.close()
        fake_dashscope.reset()


def test_one_view_keeps_todays_query(offline_embedder: Embedder) -> None:
    photo, _ = shopper_photo(seed=2)
    assert query_views(photo, max_views=1) == [photo]
    vectors = query_vectors(offline_embedder, photo, max_views=1)
    assert vectors.shape == (1, offline_embedder.identity.image_dim)
    assert np.allclose(query_embedding(offline_embedder, photo, max_views=1), offline_embedder.embed_image(photo))


@pytest.mark.parametrize(
    "photo",
    [
        Image.new("RGB", (800, 600), (40, 90, 160)),  # a flat colour: nothing stands out from the border
        Image.new("RGB", (10, 8), (255, 0, 0)),  # too small to judge
        product_photo(0).resize((12, 12)),
    ],
)
def test_nothing_to_find_means_the_photo_alone(photo: Image.Image) -> None:
    assert foreground_boxes(photo) == []
    assert query_views(photo) == [photo]


def test_deterministic() -> None:
    photo, _ = shopper_photo(seed=5)
    first, again = query_views(photo), query_views(photo.copy())
    assert [v.size for v in first] == [v.size for v in again]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
    assert foreground_boxes(photo) == foreground_boxes(photo.copy())


def test_boxes_grow_by_their_margin_and_stay_inside_the_frame() -> None:
    grown = Box(0.4, 0.4, 0.6, 0.6).expanded(margin=0.1)
    assert (grown.left, grown.top, grown.right, grown.bottom) == pytest.approx((0.38, 0.38, 0.62, 0.62))
    edge = Box(0.9, 0.0, 1.0, 0.05).expanded(margin=0.1, min_side=0.2)
    assert (edge.left, edge.top, edge.right, edge.bottom) == pytest.approx((0.8, 0.0, 1.0, 0.2))
    assert Box(0, 0, 0.5, 0.5).iou(Box(0.25, 0, 0.75, 0.5)) == pytest.approx(1 / 3)


def test_the_mask_filters_match_pillows_rank_filters() -> None:
    """The numpy max/min filters must keep the boxes exactly what Pillow's MaxFilter/MinFilter gave."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(1, 70, 2))
        mask = rng.random((height, width)) < rng.random()
        for size in (3, 5):
            for grow in (True, False):
                image = Image.fromarray(mask.astype(np.uint8) * 255)
                image = image.filter(ImageFilter.MaxFilter(size) if grow else ImageFilter.MinFilter(size))
                assert np.array_equal(_filtered(mask, size, grow), np.asarray(image) > 127)


def flood_filled_largest(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest 4-connected blob's bounds by a plain flood fill from each pixel in raster order."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: tuple[int, tuple[int, int, int, int]] | None = None
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x], todo, pixels = True, [(y, x)], []
        while todo:
            cy, cx = todo.pop()
            pixels.append((cy, cx))
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        ys, xs = [p[0] for p in pixels], [p[1] for p in pixels]
        if best is None or len(pixels) > best[0]:  # the first found wins a tie: raster order
            best = (len(pixels), (min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return None if best is None else best[1]


def test_the_largest_blob_is_the_one_a_flood_fill_finds() -> None:
    rng = np.random.default_rng(11)
    masks = [rng.random((int(h), int(w))) < rng.random() for h, w in rng.integers(1, 40, (400, 2))]
    masks += [np.zeros((5, 5), bool), np.eye(6, dtype=bool), np.ones((3, 7), bool)]
    twins = np.zeros((9, 12), bool)  # two blobs of one size: the first in raster order wins
    twins[5:7, 1:4] = twins[1:3, 7:10] = True
    masks.append(twins)
    for mask in masks:
        assert largest_component(mask) == flood_filled_largest(mask), mask.astype(int)
    assert largest_component(twins) == (7, 1, 10, 3)


def test_many_photos_at_once_give_each_photos_own_views(offline_embedder: Embedder) -> None:
    photos = [shopper_photo(seed)[0] for seed in (1, 2)] + [Image.new("RGB", (300, 300), (40, 90, 160))]
    together = query_vectors_many(offline_embedder, photos)
    for photo, vectors in zip(photos, together, strict=True):
        alone = query_vectors(offline_embedder, photo)
        assert vectors is not None and vectors.shape == alone.shape
        assert np.allclose(vectors, alone, atol=1e-6)  # other batch sizes round the last bits differently

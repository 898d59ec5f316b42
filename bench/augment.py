"""Deterministic photo augmentations that turn a catalog photo into a plausible shopper's query.

Every function takes an explicit `numpy.random.Generator`, so a fixed seed gives the same queries on
every machine (PIL's operations used here are deterministic). The usual entry point:

    rng = numpy.random.default_rng([seed, photo_index])
    queries = [augment(photo, rng) for _ in range(3)]

`augment` chains: crop 60-90 % of each side -> rotate +-15 deg -> colour jitter (brightness,
contrast, saturation +-40 %, hue +-5 %) -> paste, at 50-80 % of the backdrop's size, on a synthetic
background -> JPEG quality 40.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from services.images import upright_rgb


def limit_size(image: Image.Image, max_side: int = 800) -> Image.Image:
    """A copy no larger than max_side (speeds the rest up; queries are shrunk to 224 px anyway)."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def random_crop(image: Image.Image, rng: np.random.Generator, low: float = 0.6, high: float = 0.9) -> Image.Image:
    """Keep a random window of `low`..`high` of each side, anywhere in the photo."""
    width, height = image.size
    cw = max(1, round(width * rng.uniform(low, high)))
    ch = max(1, round(height * rng.uniform(low, high)))
    left = int(rng.integers(0, width - cw + 1))
    top = int(rng.integers(0, height - ch + 1))
    return image.crop((left, top, left + cw, top + ch))


def random_rotation(image: Image.Image, rng: np.random.Generator, max_degrees: float = 15.0) -> Image.Image:
    """Rotate by up to +-max_degrees; the uncovered corners are transparent (RGBA result)."""
    angle = float(rng.uniform(-max_degrees, max_degrees))
    return image.convert("RGBA").rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)


def colour_jitter(
    image: Image.Image,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.05,
) -> Image.Image:
    """Brightness, contrast, saturation factors in [1-x, 1+x] and a hue shift of up to +-`hue` of the
    colour wheel, applied in random order (like torchvision's ColorJitter)."""
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    out = image.convert("RGB")
    steps = [
        (ImageEnhance.Brightness, brightness),
        (ImageEnhance.Contrast, contrast),
        (ImageEnhance.Color, saturation),
        (shift_hue, hue),
    ]
    for index in rng.permutation(len(steps)):
        enhancer, amount = steps[int(index)]
        if enhancer is shift_hue:
            out = shift_hue(out, float(rng.uniform(-amount, amount)))
        else:
            out = enhancer(out).enhance(float(rng.uniform(1 - amount, 1 + amount)))
    if alpha is not None:
        out.putalpha(alpha)
    return out


def shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate hues by `shift` turns of the colour wheel (-0.5..0.5)."""
    h, s, v = image.convert("HSV").split()
    offset = round(shift * 256) % 256
    h = h.point(lambda value: (value + offset) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def random_background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A synthetic backdrop: a two-colour gradient in a random direction with soft light/dark blotches and noise."""
    width, height = size
    c1, c2 = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs / max(width - 1, 1) * np.cos(theta) + ys / max(height - 1, 1) * np.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    pixels = c1 + (c2 - c1) * t[..., None]
    grid = (max(2, height // 96), max(2, width // 96))
    shade = rng.normal(0, 22, size=(*grid, 1)) + rng.normal(0, 5, size=(*grid, 3))  # mostly light/dark
    blotches = (
        np.asarray(
            Image.fromarray(np.clip(shade + 128, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        - 128
    )
    pixels = pixels + blotches + rng.normal(0, 6, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def paste_on_background(
    image: Image.Image,
    rng: np.random.Generator,
    background: Image.Image | None = None,
    fill: tuple[float, float] = (0.5, 0.8),
) -> Image.Image:
    """Place the (possibly transparent) photo, scaled to `fill` of the backdrop, at a random spot."""
    image = image.convert("RGBA")
    width, height = image.size
    scale = float(rng.uniform(*fill))
    bw, bh = round(width / scale), round(height / scale)
    if background is None:
        background = random_background((bw, bh), rng)
    else:
        background = ImageOps.fit(background.convert("RGB"), (bw, bh), Image.Resampling.BICUBIC)
    left = int(rng.integers(0, bw - width + 1))
    top = int(rng.integers(0, bh - height + 1))
    canvas = background.convert("RGBA")
    canvas.alpha_composite(image, (left, top))
    return canvas.convert("RGB")


def jpeg(image: Image.Image, quality: int = 40) -> Image.Image:
    """Round-trip through JPEG at the given quality."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def augment(image: Image.Image, rng: np.random.Generator, background: Image.Image | None = None) -> Image.Image:
    """One query photo: crop 60-90 %, rotate +-15 deg, colour jitter, pasted on a background, JPEG q40."""
    out = random_crop(upright_rgb(image), rng)
    out = random_rotation(out, rng)
    out = colour_jitter(out, rng)
    out = paste_on_background(out, rng, background)
    return jpeg(out, 40)


def augmented_queries(image: Image.Image, seed: int, index: int, count: int = 3) -> list[Image.Image]:
    """`count` queries for the photo at position `index` of a catalog; independent of other photos."""
    rng = np.random.default_rng([seed, index])
    return [augment(image, rng) for _ in range(count)]

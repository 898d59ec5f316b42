"""The "no good match" thresholds, calibrated on the shop's own catalog.

A cosine score means different things for different embedders and catalogs: an ImageNet
feature gives any photo 0.4 against a shop's products, a CLIP text query rarely passes 0.3.
A fixed default (0.0) made every search answer "12 matching products", even for nonsense.

So after an ingest changes the catalog, ShopLens asks two kinds of questions of it, through the
same search code a shopper's query takes:
- nonsense it cannot sell: noise, flat colours, gradients, scribbles; gibberish words;
- its own products, asked the hard way: a catalog photo cropped, turned and re-encoded as a
  shopper's phone would; a product's category or title as a shopper would type it.
The threshold of each query kind (photo, text) sits between the best scores nonsense reaches and
the worst its own products reach. Where the two overlap (an ImageNet feature scores a scribble
about as high as a poorly lit, cluttered photo of a product), a photo threshold meets them
halfway, while a text threshold refuses the nonsense: a real text query nearly always shares
words with its product, and those words make it a match whatever its semantic score
(services/search.py). Queries in Chinese (or Japanese, Korean) get a threshold of their own: a
multilingual text model scores a Chinese query against English listings lower than an English
one (multilingual-e5-small: median 0.81 against 0.88 on the sample shop), and Latin gibberish
says nothing about where Chinese nonsense lands, so gibberish of common Chinese characters is asked
too, and Chinese titles are the real questions when the shop has them. The
thresholds are stored with the collection (store_meta), so every replica and CLI uses the same.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance
from sqlalchemy import select

from services.catalog.meta import get_meta, set_meta
from services.catalog.models import Product
from services.catalog.store import CatalogStore
from services.images import ImageError, ImageLimits, decode_for_model
from services.lexical import has_cjk
from services.media import MediaStore

log = logging.getLogger(__name__)
PHOTO, TEXT_QUERY = "photo", "text"
SAMPLE_PRODUCTS = 48  # real questions per kind; nonsense ones are fixed
# Nonsense a threshold must refuse: 90 % of photos (the rest are shopper-like enough to be shown,
# and a lower photo threshold keeps real photos: it loses at most 1 % of them), all gibberish in
# the shop's own script (a real text query is a match by its words anyway: multilingual-e5 scores
# gibberish as high as 0.81 and "apple laptop" from 0.83, so the 95th percentile let a quarter of
# fresh gibberish through), 95 % of Chinese gibberish (a Chinese query on a shop listed in English
# shares no words with it: refusing every Chinese nonsense would refuse half the real queries).
# Real queries a threshold must keep: 99 %.
PHOTO_NOISE_QUANTILE, TEXT_NOISE_QUANTILE, CJK_NOISE_QUANTILE, REAL_QUANTILE = 0.90, 1.0, 0.95, 0.01
LEAN = 0.2  # where between the nonsense and real quantiles the threshold sits (0: at nonsense)
RECALIBRATE_SHARE = 0.1  # recalibrate when the catalog grew or shrank by this share


@dataclass(frozen=True)
class Thresholds:
    photo: float
    text: float
    products: int  # catalog size when calibrated
    details: dict[str, Any]
    text_cjk: float | None = None  # queries written in CJK characters (None: calibrated before it existed)

    def for_query(self, text_share: float, text: str = "") -> float:
        """A photo+text query mixes the two as it mixes their scores."""
        text_t = self.text_cjk if self.text_cjk is not None and has_cjk(text) else self.text
        return (1 - text_share) * self.photo + text_share * text_t


# The top semantic score of each query: (photos or None, texts or None, only this SKU or None) -> scores
ScoreFn = Callable[[list[Image.Image | None], list[str | None], list[str | None]], list[float | None]]


def meta_key(collection: str) -> str:
    return f"thresholds:{collection}"


def load_thresholds(catalog: CatalogStore, collection: str) -> Thresholds | None:
    value = get_meta(catalog, meta_key(collection))
    if not value:
        return None
    try:
        cjk = value.get("text_cjk")
        return Thresholds(
            float(value["photo"]),
            float(value["text"]),
            int(value["products"]),
            value.get("details", {}),
            None if cjk is None else float(cjk),
        )
    except (KeyError, TypeError, ValueError):
        return None


def needs_calibration(current: Thresholds | None, products: int) -> bool:
    if products == 0:
        return False
    if current is None:
        return True
    return abs(products - current.products) >= max(1, RECALIBRATE_SHARE * current.products)


def calibrate(
    score: ScoreFn,
    catalog: CatalogStore,
    media: MediaStore,
    limits: ImageLimits,
    collection: str,
    cross_modal_photos: bool = True,
    seed: int = 7,
    billed: bool = False,
) -> Thresholds | None:
    """Measure and store the thresholds; None for an empty catalog (nothing to calibrate on).

    `billed`: the embedder charges (and rate-limits) every call (DashScope), so half the
    questions are asked: ~75 calls instead of ~150, about a minute at 120 requests a minute."""
    share = 2 if billed else 1
    products = _sample(catalog, SAMPLE_PRODUCTS // share, seed)
    if not products:
        return None
    rng = random.Random(seed)
    noise_photo = _scores(score, [(img, None, None) for img in nonsense_photos(seed)[::share]])
    noise_text = _scores(score, [(None, words, None) for words in gibberish(seed)[::share]])
    noise_cjk = _scores(score, [(None, words, None) for words in cjk_gibberish(seed)[::share]])
    views: list[tuple[Image.Image | None, str | None, str | None]] = []
    for sku, media_path in ((p["sku"], p["media_path"]) for p in products if p["media_path"]):
        try:
            photo, _ = decode_for_model(media.read(media_path), limits)
        except (OSError, ImageError):
            continue
        views.append((shopper_view(photo, rng), None, sku))
    real_photo = _scores(score, views)
    text_questions = [(None, p["query"], p["sku"]) for p in products]
    real_text = _scores(score, [q for q in text_questions if not has_cjk(q[1])])
    real_cjk = _scores(score, [q for q in text_questions if has_cjk(q[1])])
    photo_t = _between(noise_photo, real_photo, PHOTO_NOISE_QUANTILE, meet_halfway=True)
    text_t = _between(noise_text, real_text, TEXT_NOISE_QUANTILE, meet_halfway=False)
    # no Chinese titles to ask (a shop listed in English): Chinese nonsense alone sets it
    cjk_t = _between(noise_cjk, real_cjk, CJK_NOISE_QUANTILE, False) if real_cjk else _cjk_noise(noise_cjk)
    total = catalog.counts()["products"]
    details = {
        "photo": _summary(noise_photo, real_photo, photo_t, PHOTO_NOISE_QUANTILE),
        "text": _summary(noise_text, real_text, text_t, TEXT_NOISE_QUANTILE),
        "text_cjk": _summary(noise_cjk, real_cjk, cjk_t, CJK_NOISE_QUANTILE),
        "cross_modal_photos": cross_modal_photos,
    }
    thresholds = Thresholds(photo_t, text_t, total, details, cjk_t)
    set_meta(catalog, meta_key(collection), asdict(thresholds))
    log.info(
        "search thresholds calibrated on %d products: photo %.3f, text %.3f (CJK %.3f)", total, photo_t, text_t, cjk_t
    )
    return thresholds


def _between(noise: Sequence[float], real: Sequence[float], noise_quantile: float, meet_halfway: bool) -> float:
    if not noise and not real:
        return 0.0
    if not real:
        return float(np.quantile(noise, noise_quantile)) + 0.01
    hi = float(np.quantile(real, REAL_QUANTILE))
    if not noise:
        return hi
    lo = float(np.quantile(noise, noise_quantile))
    if lo < hi:
        return lo + LEAN * (hi - lo)
    return (lo + hi) / 2 if meet_halfway else lo  # photos: meet halfway; words: a real query matches by its words


def _cjk_noise(noise: Sequence[float]) -> float:
    return float(np.quantile(noise, CJK_NOISE_QUANTILE)) if noise else 0.0


def _summary(noise: Sequence[float], real: Sequence[float], threshold: float, noise_quantile: float) -> dict[str, Any]:
    def q(values: Sequence[float], p: float) -> float | None:
        return round(float(np.quantile(values, p)), 4) if values else None

    return {
        "threshold": round(threshold, 4),
        "nonsense_max": q(noise, 1.0),
        "nonsense_quantile": q(noise, noise_quantile),
        "real_quantile": q(real, REAL_QUANTILE),
        "real_median": q(real, 0.5),
        "nonsense_refused": round(sum(s < threshold for s in noise) / len(noise), 3) if noise else None,
        "real_kept": round(sum(s >= threshold for s in real) / len(real), 3) if real else None,
    }


def _scores(score: ScoreFn, questions: Sequence[tuple[Image.Image | None, str | None, str | None]]) -> list[float]:
    if not questions:
        return []
    images, texts, skus = (list(column) for column in zip(*questions, strict=True))
    return [float(v) for v in score(images, texts, skus) if v is not None]


def _sample(catalog: CatalogStore, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to `n` products spread over the catalog: SKU, first photo, and a shopper's words. Only
    the ids of the whole catalog are read; the rows of the chosen ones alone are loaded."""
    rng = random.Random(seed)
    with catalog.session() as session:
        ids = list(session.scalars(select(Product.id).order_by(Product.id)))
    chosen = sorted(rng.sample(ids, min(n, len(ids))))
    rows: list[dict[str, Any]] = []
    for start in range(0, len(chosen), 200):
        with catalog.session() as session:
            part = chosen[start : start + 200]
            for product in session.scalars(select(Product).where(Product.id.in_(part)).order_by(Product.id)):
                words = product.title if rng.random() < 0.5 or not product.category else product.category
                rows.append(
                    {
                        "sku": product.sku,
                        "media_path": product.images[0].media_path if product.images else None,
                        "query": words,
                    }
                )
    return rows


def shopper_view(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A catalog photo as a shopper's phone would give it: cropped, turned, in other light, on a
    cluttered table or floor, re-encoded as a poor JPEG (the hard end of real queries)."""
    w, h = photo.size
    box = (
        int(w * rng.uniform(0.0, 0.2)),
        int(h * rng.uniform(0.0, 0.2)),
        w - int(w * rng.uniform(0.0, 0.2)),
        h - int(h * rng.uniform(0.0, 0.2)),
    )
    product = photo.crop(box).rotate(rng.uniform(-12, 12), expand=True, fillcolor=(255, 255, 255))
    product = ImageEnhance.Brightness(product).enhance(rng.uniform(0.75, 1.25))
    product = ImageEnhance.Color(product).enhance(rng.uniform(0.7, 1.3))
    side = max(product.size)
    backdrop = _clutter(int(side / rng.uniform(0.5, 0.8)), rng)
    scale = side / max(product.size)
    product = product.resize((max(1, int(product.width * scale)), max(1, int(product.height * scale))))
    x = rng.randint(0, backdrop.width - product.width)
    y = rng.randint(0, backdrop.height - product.height)
    backdrop.paste(product, (x, y))
    buf = io.BytesIO()
    backdrop.save(buf, "JPEG", quality=rng.randint(35, 65))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _clutter(size: int, rng: random.Random) -> Image.Image:
    """A busy background: a tinted gradient with scattered shapes."""
    base = tuple(rng.randint(90, 230) for _ in range(3))
    canvas = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(6, 14)):
        x0, y0 = rng.randint(0, size), rng.randint(0, size)
        x1, y1 = x0 + rng.randint(size // 20, size // 3), y0 + rng.randint(size // 20, size // 3)
        colour = tuple(rng.randint(20, 240) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return canvas


def nonsense_photos(seed: int = 7, size: int = 256) -> list[Image.Image]:
    """Pictures no shop sells: noise, flat colours, gradients, scribbles, stripes."""
    rng = np.random.default_rng(seed)
    pictures = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(4)]
    pictures += [
        Image.fromarray(np.clip(rng.normal(128, 40, (size, size)), 0, 255).astype(np.uint8)).convert("RGB")
        for _ in range(2)
    ]
    for colour in [(255, 255, 255), (0, 0, 0), (128, 128, 128), (200, 30, 30), (30, 160, 60), (40, 60, 200)]:
        pictures.append(Image.new("RGB", (size, size), colour))
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for a, b in [((255, 0, 0), (0, 0, 255)), ((0, 0, 0), (255, 255, 255)), ((255, 200, 0), (0, 120, 120))]:
        mix = ramp[None, :, None] / 255.0
        arr = (1 - mix) * np.array(a, np.float32) + mix * np.array(b, np.float32)
        pictures.append(Image.fromarray(np.repeat(arr, size, axis=0).astype(np.uint8)))
    for k in range(6):
        canvas = Image.new("RGB", (size, size), (255, 255, 255) if k % 2 == 0 else (240, 230, 200))
        draw = ImageDraw.Draw(canvas)
        for _ in range(3 + k):
            xy = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(6)]
            draw.line(xy, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=int(rng.integers(2, 8)))
        pictures.append(canvas)
    for period in (8, 32):
        stripes = (np.arange(size)[None, :] // period % 2 * 255).astype(np.uint8)
        pictures.append(Image.fromarray(np.repeat(stripes, size, axis=0)).convert("RGB"))
    return pictures


def gibberish(seed: int = 7, count: int = 32) -> list[str]:
    """Words no shop sells: syllable soup and keyboard mashes."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfghjklmnpqrstvwxz", "aeiouy"
    words = ["xyzzy qwerty", "asdfgh jkl", "zxcvbnm", "qwertyuiop", "lorem ipsum dolor", "hjkl uiop"]
    while len(words) < count:
        parts = []
        for _ in range(rng.randint(1, 3)):
            length = rng.randint(2, 4)
            parts.append("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(length)))
        words.append(" ".join(parts))
    return words


# Common characters of everyday Chinese, strung together at random: nonsense in the script itself
_COMMON_HANZI = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说"
    "产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使"
    "点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明"
    "看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料"
)


def cjk_gibberish(seed: int = 7, count: int = 32) -> list[str]:
    """Chinese nonsense: two to five common characters that make no word a shop sells."""
    rng = random.Random(seed)
    return ["".join(rng.choice(_COMMON_HANZI) for _ in range(rng.randint(2, 5))) for _ in range(count)]

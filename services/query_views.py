"""Object-centred views of a shopper's photo, for every embedder (it only calls `embed_images`).

Why: a shopper photographs a product where it stands: small, off-centre, on a busy table or floor.
Catalog photos are the product alone, so the embedder's one look at the whole frame is diluted by
the clutter around the product. Looking again at the product itself helps: on the shopper-style
sets of bench/shopper_photos.py (held-out split) it lifts recall@1 of both offline embedder
framings well above the whole frame alone, and an exact catalog photo still finds itself first
(BENCHMARKS.md, "Shopper-style photo queries").

How the product is found, without a model: the frame's border is taken to be background. Every
pixel of a small copy (128 px) gets two background scores from the border's colours (its
distance to the nearest of a dozen border colour clusters, and whether its colour bin is one
the border uses at all); the pixels unlike the border are the foreground, cleaned by a closing
and an opening, and the largest 4-connected blob of each foreground map is a candidate box. A
box covering nearly the whole frame, or one that repeats the other, is dropped: a clean catalog
photo then costs little more than one view. Views are the whole photo plus these crops (with
a 10 % margin), so a localisation that misses never loses what the whole photo would find.

Fusing views: the best is to score each catalog vector against every view and keep the best
score (`query_vectors` + `best_over_views`): a crop that misses the product seldom outscores the
whole photo's right answer, and an exact
catalog photo still scores 1.0 against itself through its whole view. When the vector store takes
one query vector only, `query_embedding` gives one (`fused_vector`: half the whole photo, half
the crops), which keeps part of the gain. A photo costs up to 3 embeddings in one `embed_images`
batch (BENCHMARKS.md gives the latency). Embedders that bill per image (DashScope) get one view
by default, which is exactly today's query; `max_views` overrides that either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from services.embedders.base import Embedder, EmbedError
from services.union_find import find_root

WORK_SIDE = 128  # the localiser looks at a copy this size: enough for the product's outline, ~4 ms a photo
BORDER = 0.06  # the band along the edges taken as background, a fraction of the short side
CLUSTERS = 12  # border colour clusters (k-means, deterministic start)
DISTANCE = 0.10  # a pixel this far (RGB in 0..1) from every border cluster is foreground
HIST_BINS = 12  # per channel, for the border colour histogram
MARGIN = 0.10  # added around a box on each side, a fraction of its size
MIN_SIDE = 0.20  # a crop spans at least this fraction of each side of the frame
NEAR_FULL = 0.85  # a box covering this fraction of the frame is the frame: no crop
SAME_BOX = 0.80  # IoU above which two boxes are one view
MAX_VIEWS = 3  # the whole photo and up to two crops
# Backends that bill and rate-limit every image (DashScope: 120 requests a minute, one image each):
# three views would triple a shopper's cost and wait, so they keep today's single view unless asked.
PER_IMAGE_BILLED = frozenset({"dashscope"})


@dataclass(frozen=True)
class Box:
    """A region as fractions of the frame's width and height."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def area(self) -> float:
        return max(0.0, self.right - self.left) * max(0.0, self.bottom - self.top)

    def iou(self, other: Box) -> float:
        width = min(self.right, other.right) - max(self.left, other.left)
        height = min(self.bottom, other.bottom) - max(self.top, other.top)
        inter = max(0.0, width) * max(0.0, height)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def expanded(self, margin: float = MARGIN, min_side: float = MIN_SIDE) -> Box:
        """With `margin` of its size added on each side, at least `min_side` wide and high, inside the frame."""

        def side(lo: float, hi: float) -> tuple[float, float]:
            size = hi - lo
            lo, hi = lo - size * margin, hi + size * margin
            if hi - lo < min_side:
                centre = (lo + hi) / 2
                lo, hi = centre - min_side / 2, centre + min_side / 2
            shift = max(0.0, -lo) - max(0.0, hi - 1.0)  # slide back inside before clipping
            return max(0.0, lo + shift), min(1.0, hi + shift)

        left, right = side(self.left, self.right)
        top, bottom = side(self.top, self.bottom)
        return Box(left, top, right, bottom)

    def crop(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        pixels = (
            round(self.left * width),
            round(self.top * height),
            max(round(self.right * width), round(self.left * width) + 1),
            max(round(self.bottom * height), round(self.top * height) + 1),
        )
        return image.crop(pixels)


# -- foreground maps -------------------------------------------------------------------------------
def small_rgb(image: Image.Image, side: int = WORK_SIDE) -> np.ndarray:
    """A lightly blurred copy at most `side` px, as float RGB in 0..1 (H, W, 3)."""
    copy = image.convert("RGB")
    copy.thumbnail((side, side), Image.Resampling.BILINEAR)
    copy = copy.filter(ImageFilter.GaussianBlur(1))  # JPEG blocks and sensor noise are not edges
    return np.asarray(copy, dtype=np.float32) / 255.0


def border_pixels(pixels: np.ndarray, band: float = BORDER) -> np.ndarray:
    """The colours of the band along the four edges, (N, 3)."""
    height, width = pixels.shape[:2]
    b = max(1, round(band * min(height, width)))
    parts = (pixels[:b], pixels[-b:], pixels[b:-b, :b], pixels[b:-b, -b:])
    return np.concatenate([p.reshape(-1, 3) for p in parts])


def border_distance_map(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's RGB distance to the nearest border colour cluster: high where the photo is
    unlike its edges (a product in front of a table, a floor, a wall)."""
    border = border_pixels(pixels)
    border = border[:: max(1, len(border) // 1024)]  # a thousand samples describe the edges well enough
    order = np.argsort(border.sum(axis=1), kind="stable")  # deterministic start: spread over brightness
    centres = border[order[np.linspace(0, len(order) - 1, min(CLUSTERS, len(order))).astype(int)]]
    for _ in range(6):
        nearest = _squared_distances(border, centres).argmin(axis=1)
        counts = np.bincount(nearest, minlength=len(centres))[:, None]
        sums = np.stack([np.bincount(nearest, weights=border[:, c], minlength=len(centres)) for c in range(3)], 1)
        centres = np.where(counts > 0, sums / np.maximum(counts, 1), centres).astype(np.float32)
    height, width = pixels.shape[:2]
    nearest_distance = _squared_distances(pixels.reshape(-1, 3), centres).min(axis=1)
    return np.sqrt(np.maximum(nearest_distance, 0.0)).reshape(height, width)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, K) squared distances by |p|² + |c|² - 2 p·c (one matrix product, no (N, K, 3) array)."""
    return (points**2).sum(1)[:, None] + (centres**2).sum(1)[None, :] - 2.0 * points @ centres.T


def border_histogram_map(pixels: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """1 where a pixel's colour bin (and its neighbouring bins) hardly occurs along the border, else 0:
    catches a product whose colours the border never shows, however far in RGB."""
    quantised = np.minimum((pixels * bins).astype(np.int64), bins - 1)
    index = (quantised[..., 0] * bins + quantised[..., 1]) * bins + quantised[..., 2]
    border = np.minimum((border_pixels(pixels) * bins).astype(np.int64), bins - 1)
    border_index = (border[:, 0] * bins + border[:, 1]) * bins + border[:, 2]
    hist = np.bincount(border_index, minlength=bins**3).reshape(bins, bins, bins).astype(np.float32)
    hist /= max(float(hist.sum()), 1.0)
    padded = np.pad(hist, 1)
    smooth = np.zeros_like(hist)  # a 3x3x3 box blur that does not wrap round the colour cube
    for i in range(3):
        for j in range(3):
            for k in range(3):
                smooth += padded[i : i + bins, j : j + bins, k : k + bins]
    smooth /= 27.0
    return (smooth.ravel()[index] < 0.5 / bins**3).astype(np.float32)


# -- from a map to a box ---------------------------------------------------------------------------
def _filtered(mask: np.ndarray, size: int, grow: bool) -> np.ndarray:
    """The mask grown (a max filter) or shrunk (a min filter) over a `size` x `size` square, edges
    repeated outward as Pillow's MaxFilter/MinFilter do; the same pixels, ~40x less CPU: a square
    window's max is a max along rows, then along columns (Pillow's rank filter sorts every window)."""
    reach, (height, width) = size // 2, mask.shape
    padded = np.pad(mask.astype(bool), reach, mode="edge")
    combine = np.logical_or if grow else np.logical_and
    rows = padded[:, :width].copy()
    for k in range(1, size):
        combine(rows, padded[:, k : k + width], out=rows)
    out = rows[:height].copy()
    for k in range(1, size):
        combine(out, rows[k : k + height], out=out)
    return out


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Close small gaps inside the product (5 px), then drop specks and thin lines (3 px)."""
    mask = _filtered(_filtered(mask, 5, grow=True), 5, grow=False)
    return _filtered(_filtered(mask, 3, grow=False), 3, grow=True)


def largest_component(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The pixel bounds (left, top, right, bottom; right and bottom exclusive) of the mask's largest
    4-connected blob, the one starting first in raster order among equals; None for an empty mask.

    Why runs: a blob is a set of horizontal runs joined where runs of adjacent rows share a column,
    so a union-find over a few hundred runs finds it without labelling every pixel (labelling by
    repeated minimum propagation cost ~3 ms a mask, a third of a photo's localisation)."""
    height, width = mask.shape
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows_, starts_ = np.nonzero(edges == 1)  # raster order: by row, then by column
    if not len(rows_):
        return None
    rows, starts, ends = rows_.tolist(), starts_.tolist(), np.nonzero(edges == -1)[1].tolist()
    parent = list(range(len(rows)))  # a blob's root is its first run in raster order

    above = row_start = 0  # the previous row's runs are runs[above:row_start] while it is adjacent
    for i, (row, start, end) in enumerate(zip(rows, starts, ends, strict=True)):
        if i and row != rows[i - 1]:
            above, row_start = (row_start, i) if row == rows[i - 1] + 1 else (i, i)
        while above < row_start and ends[above] <= start:  # ends before this run: before the next ones too
            above += 1
        j = above
        while j < row_start and starts[j] < end:
            a, b = find_root(parent, i), find_root(parent, j)
            parent[max(a, b)] = min(a, b)
            j += 1
    size: dict[int, int] = {}
    bounds: dict[int, tuple[int, int, int, int]] = {}
    for i, (row, start, end) in enumerate(zip(rows, starts, ends, strict=True)):
        r = find_root(parent, i)
        size[r] = size.get(r, 0) + end - start
        left, top, right, bottom = bounds.get(r, (width, height, 0, 0))
        bounds[r] = (min(left, start), min(top, row), max(right, end), max(bottom, row + 1))
    return bounds[max(size, key=lambda r: (size[r], -r))]


def largest_component_box(mask: np.ndarray) -> Box | None:
    """The box of the mask's largest blob after cleaning; None when nothing is left."""
    found = largest_component(clean_mask(mask))
    if found is None:
        return None
    left, top, right, bottom = found
    height, width = mask.shape
    return Box(left / width, top / height, right / width, bottom / height)


def foreground_boxes(image: Image.Image) -> list[Box]:
    """Where the product probably is: up to two boxes (fractions of the frame), best guess first.

    Empty for a photo with no region unlike its border (a flat colour, a photo that is all product)
    or one too small to judge.
    """
    pixels = small_rgb(image)
    if min(pixels.shape[:2]) < 16:
        return []
    boxes: list[Box] = []
    for mask in (border_distance_map(pixels) > DISTANCE, border_histogram_map(pixels) > 0):
        box = largest_component_box(mask)
        if box is None or box.area >= NEAR_FULL or any(box.iou(b) > SAME_BOX for b in boxes):
            continue
        boxes.append(box)
    return boxes


# -- views and their vectors -----------------------------------------------------------------------
def query_views(image: Image.Image, max_views: int = MAX_VIEWS) -> list[Image.Image]:
    """The photo itself, then crops around where the product probably is (at most `max_views` in all)."""
    views = [image]
    if max_views > 1:
        views += [box.expanded().crop(image) for box in foreground_boxes(image)[: max_views - 1]]
    return views


def default_views(embedder: Embedder) -> int:
    """How many views a photo query gets by default with this embedder (see PER_IMAGE_BILLED)."""
    return 1 if embedder.identity.backend in PER_IMAGE_BILLED else MAX_VIEWS


def query_vectors(embedder: Embedder, image: Image.Image, max_views: int | None = None) -> np.ndarray:
    """Unit vectors of the photo's views, (k, dim), whole photo first, in one `embed_images` batch;
    `max_views` defaults to `default_views(embedder)`.

    Raises EmbedError when the whole photo cannot be embedded; a crop that fails is left out.
    """
    views = query_views(image, default_views(embedder) if max_views is None else max_views)
    result = embedder.embed_images(views)
    if not result.ok(0):
        raise EmbedError(result.errors[0])
    return result.vectors[[i for i in range(len(result.vectors)) if result.ok(i)]]


def query_vectors_many(
    embedder: Embedder, images: Sequence[Image.Image], max_views: int | None = None
) -> list[np.ndarray | None]:
    """`query_vectors` of many photos, their views embedded in one `embed_images` call (None where
    a photo's whole view fails). Why: calibration asks ~80 photo questions; one call each ran the
    model on batches of 1-3 views, at about twice the CPU per image of full batches."""
    per_photo = default_views(embedder) if max_views is None else max_views
    views = [query_views(image, per_photo) for image in images]
    try:
        result = embedder.embed_images([view for photo_views in views for view in photo_views])
    except EmbedError:  # the call as a whole failed: each photo alone, so one cannot sink the rest
        return [_or_none(embedder, image, per_photo) for image in images]
    vectors: list[np.ndarray | None] = []
    start = 0
    for photo_views in views:
        rows = [i for i in range(start, start + len(photo_views)) if result.ok(i)]
        vectors.append(result.vectors[rows] if result.ok(start) else None)
        start += len(photo_views)
    return vectors


def _or_none(embedder: Embedder, image: Image.Image, max_views: int) -> np.ndarray | None:
    try:
        return query_vectors(embedder, image, max_views)
    except EmbedError:
        return None


def best_over_views(scores: np.ndarray) -> np.ndarray:
    """Per candidate, its best cosine over the views: `scores` is (views, candidates)."""
    return np.asarray(scores, dtype=np.float32).max(axis=0)


def fused_vector(vectors: np.ndarray) -> np.ndarray:
    """One unit vector for a photo's views (whole photo first): half the whole photo, half the crops'
    mean. Why half: with an equal share, a clean catalog photo of one of two near-identical products
    (two juice bottles) drifted to its twin; the whole photo's half keeps it on itself."""
    vectors = np.asarray(vectors, dtype=np.float32)
    mixed = vectors[0] if len(vectors) == 1 else 0.5 * vectors[0] + 0.5 * vectors[1:].mean(axis=0)
    return (mixed / max(float(np.linalg.norm(mixed)), 1e-12)).astype(np.float32)


def query_embedding(embedder: Embedder, image: Image.Image, max_views: int | None = None) -> np.ndarray:
    """One unit vector for the photo, for a search that takes one query vector (`fused_vector` of
    its views); scoring every view and keeping the best (`query_vectors`, `best_over_views`) does better."""
    return fused_vector(query_vectors(embedder, image, max_views))

"""Photo queries as shoppers take them: which query views help photo -> product search? (issue 11, part 4)

Why: a shopper's photo shows the product small, off-centre, tilted, partly cut off, recoloured by
the light and JPEG-compressed, on a busy table or floor, while the catalog photo is a clean studio
shot. The embedder sees the whole frame, so the clutter dilutes the product. This benchmark builds
such photos from the sample catalogs, deterministically, and measures query views (crops of the
photo and fusions of several views) beside today's query path, in the same run.

Sets (all generated at run time from fixed seeds; nothing is stored in the repository):
- catalog: the Vendure sample's 54 product photos (npm registry, `cli.samples`) and the Saleor demo
  shop's product photos (`pip download saleor==2.10.1`), products with 2-4 views kept as one product;
  decoded and embedded as ingestion does (`decode_for_model` -> `embed_images`).
- shopper photos: each catalog photo (Saleor's as the cut-out its transparency gives, Vendure's as
  the photo) cropped to 60-95 %, rotated +-15 deg, colour-jittered, sometimes given a drop shadow,
  pasted at 30-90 % of the frame at a random spot on a cluttered backdrop (random shapes, stripes /
  checks / dots, value noise, gradients with blotches, or a zoomed real photo of a room), then
  sensor noise or slight blur and JPEG quality 40-80, at phone-like sizes (640-1600 px). A "tune"
  split (seed 1) chose the views; the "held-out" split (seed 2, more photos per product) reports.
- clean: every catalog photo searched as it was ingested (it must still find itself first).
- nonsense: random noise, flat colours, gradients, scribbles and bare backdrops (no product): their
  top-1 scores against the catalog, beside the real queries', for the "no good match" threshold.

Recall is of products (a product's best photo counts), exact cosine in numpy.

    .venv/bin/python -m bench.shopper_photos [--embedders offline,offline-pad,vit-b-32] [--out BENCHMARKS.md]

Writes its section of BENCHMARKS.md; `--out -` prints it only. The sets are cached under --cache.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from bench import sections
from bench.augment import colour_jitter, random_background
from services.embedders.base import Embedder
from services.images import ImageLimits, decode_for_model, upright_rgb
from services.query_views import (
    DISTANCE,
    Box,
    border_distance_map,
    foreground_boxes,
    fused_vector,
    query_views,
    small_rgb,
)

SALEOR_VERSION = "2.10.1"
SPLITS = {"tune": (1, 2), "held-out": (2, 3)}  # name -> (seed, photos per catalog photo)
NONSENSE_PER_KIND = 12
LATENCY_PHOTOS = 30
HEADING = "## Shopper-style photo queries: query views beside today's query path"


# -- catalogs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogPhoto:
    product: str  # the product the photo belongs to (a Vendure SKU or a Saleor product id)
    name: str  # file name, for messages
    data: bytes  # the file's bytes, as ingestion reads them


@dataclass(frozen=True)
class Query:
    data: bytes  # JPEG, as a shopper's phone sends it
    product: str  # the product it shows; "" for nonsense
    kind: str  # the backdrop (shopper photos) or the kind of nonsense
    box: tuple[float, float, float, float] | None = None  # where the product is, as fractions of the frame


@dataclass
class Sets:
    catalog: list[CatalogPhoto]
    textures: list[Image.Image]  # real room photos for backdrops (Saleor's category banners)
    queries: dict[str, list[Query]] = field(default_factory=dict)  # split -> shopper photos
    nonsense: list[Query] = field(default_factory=list)


def vendure_photos(cache: Path) -> list[CatalogPhoto]:
    """The Vendure sample shop's products with their first photo, as the storefront ingests them."""
    import csv

    from cli.samples import sample_catalog

    catalog_csv = sample_catalog(cache)
    with catalog_csv.open(newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.DictReader(fh) if row["image"]]
    return [
        CatalogPhoto(row["sku"], Path(row["image"]).name, (catalog_csv.parent / row["image"]).read_bytes())
        for row in rows
    ]


def saleor_static(cache: Path) -> Path:
    """Saleor's demo data (populatedb_data.json and placeholders/), from the PyPI wheel, cached."""
    folder = cache / "samples" / f"saleor-{SALEOR_VERSION}"
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    with tempfile.TemporaryDirectory(prefix="saleor-wheel-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--ignore-requires-python"]
            + ["-d", tmp, f"saleor=={SALEOR_VERSION}"],
            check=True,
        )
        wheel = next(Path(tmp).glob("saleor-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if ".." not in member.split("/") and (
                    member == "saleor/static/populatedb_data.json"
                    or (member.startswith("saleor/static/placeholders/") and member.endswith((".png", ".jpg")))
                ):
                    target = folder / member.removeprefix("saleor/static/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
    marker.write_text(f"saleor {SALEOR_VERSION}\n")
    return folder


def saleor_photos(static: Path) -> list[CatalogPhoto]:
    """Saleor's demo products with all their views; products that reuse another's photos are dropped."""
    records = json.loads((static / "populatedb_data.json").read_text())
    views: dict[int, list[tuple[int, str]]] = {}
    for record in records:
        if record["model"] == "product.productimage":
            fields = record["fields"]
            name = re.sub(r"_[A-Za-z0-9]{7}(\.png)$", r"\1", Path(fields["image"]).name)  # drop the upload suffix
            views.setdefault(fields["product"], []).append((fields["sort_order"], name))
    placeholders = static / "placeholders"
    photos, seen = [], set()
    for product in sorted(views):
        files = tuple(name for _, name in sorted(views[product]) if (placeholders / name).is_file())
        if not files or set(files) & seen:  # some demo products reuse another product's photos
            continue
        seen.update(files)
        photos += [CatalogPhoto(f"saleor-{product}", name, (placeholders / name).read_bytes()) for name in files]
    return photos


def banner_textures(static: Path) -> list[Image.Image]:
    return [upright_rgb(Image.open(p)) for p in sorted((static / "placeholders" / "products-list").glob("*.jpg"))]


# -- shopper-style photos -------------------------------------------------------------------------
def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    return r, g, b


def shapes_backdrop(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A gradient covered with 15-70 random ellipses, boxes, polygons and thick lines."""
    canvas = random_background(size, rng).convert("RGBA")
    width, height = size
    for _ in range(int(rng.integers(15, 70))):
        fill = (*_colour(rng), int(rng.integers(120, 256)))
        rx, ry = rng.uniform(0.02, 0.25) * width, rng.uniform(0.02, 0.25) * height
        box = (int(rng.uniform(-rx, width - rx)), int(rng.uniform(-ry, height - ry)))
        layer = Image.new("RGBA", (int(2 * rx) + 1, int(2 * ry) + 1), (0, 0, 0, 0))  # only the shape's box
        draw = ImageDraw.Draw(layer)
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.ellipse((0, 0, 2 * rx, 2 * ry), fill=fill)
        elif kind == 1:
            draw.rectangle((0, 0, 2 * rx, 2 * ry), fill=fill)
        elif kind == 2:
            points = [(rx + rx * np.cos(a), ry + ry * np.sin(a)) for a in np.sort(rng.uniform(0, 2 * np.pi, 5))]
            draw.polygon(points, fill=fill)
        else:
            draw.line((0, 0, 2 * rx, 2 * ry), fill=fill, width=int(rng.integers(2, 24)))
        canvas.alpha_composite(layer, (max(box[0], 0), max(box[1], 0)), (max(-box[0], 0), max(-box[1], 0)))
    return canvas.convert("RGB")


def pattern_backdrop(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Stripes, checks or dots in two or three colours at a random angle and period (tablecloth, tiles)."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    period = rng.uniform(10, 90)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        index = (np.floor(u / period) % 2).astype(int)
    elif kind == 1:
        index = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(int)
    else:
        cu, cv = (u % period) - period / 2, (v % period) - period / 2
        index = (np.hypot(cu, cv) < period * rng.uniform(0.15, 0.45)).astype(int)
    colours = np.array([_colour(rng), _colour(rng)], dtype=np.float32)
    pixels = colours[index] + rng.normal(0, 8, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def noise_backdrop(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Coloured value noise over several octaves (marble, carpet, gravel)."""
    width, height = size
    total = np.zeros((height, width), dtype=np.float32)
    for octave in range(5):
        cells = 2 ** (octave + 2)
        grid = rng.random((cells, cells)).astype(np.float32)
        layer = Image.fromarray((grid * 255).astype(np.uint8), "L").resize(size, Image.Resampling.BICUBIC)
        total += np.asarray(layer, dtype=np.float32) / 255 / 2**octave
    total = (total - total.min()) / max(float(total.max() - total.min()), 1e-6)
    palette = np.array([_colour(rng) for _ in range(3)], dtype=np.float32)
    t = total[..., None]
    pixels = np.where(
        t < 0.5, palette[0] + (palette[1] - palette[0]) * t * 2, palette[1] + (palette[2] - palette[1]) * (t - 0.5) * 2
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def photo_backdrop(size: tuple[int, int], rng: np.random.Generator, textures: Sequence[Image.Image]) -> Image.Image:
    """A zoomed window of a real room photo, sometimes out of focus."""
    source = textures[int(rng.integers(0, len(textures)))]
    width, height = source.size
    aspect = size[0] / size[1]
    ch = int(height * rng.uniform(0.5, 1.0))
    cw = min(width, int(ch * aspect))
    ch = min(ch, int(cw / aspect))
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    out = source.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
    return out


BACKDROPS = ("shapes", "pattern", "noise", "gradient", "photo")


def backdrop(
    kind: str, size: tuple[int, int], rng: np.random.Generator, textures: Sequence[Image.Image]
) -> Image.Image:
    if kind == "shapes":
        return shapes_backdrop(size, rng)
    if kind == "pattern":
        return pattern_backdrop(size, rng)
    if kind == "noise":
        return noise_backdrop(size, rng)
    if kind == "gradient":
        return random_background(size, rng)
    return photo_backdrop(size, rng, textures)


def frame_size(rng: np.random.Generator) -> tuple[int, int]:
    """A phone-like frame: long side 640-1600 px, 4:3, 1:1 or 16:9, either way up."""
    long_side = int(rng.integers(640, 1601))
    ratio = float(rng.choice([4 / 3, 1.0, 16 / 9]))
    short_side = round(long_side / ratio)
    return (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)


def cut_out(photo: Image.Image) -> Image.Image:
    """The product as RGBA: a transparent catalog image cropped to its opaque part, a photo as it is."""
    if photo.mode in {"RGBA", "LA", "PA", "P"} or "transparency" in photo.info:
        rgba = ImageOps.exif_transpose(photo.convert("RGBA")) or photo.convert("RGBA")
        box = rgba.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox()
        if box and rgba.getchannel("A").getextrema()[0] < 250:
            return rgba.crop(box)
    return upright_rgb(photo).convert("RGBA")


def shopper_photo(product: Image.Image, sku: str, rng: np.random.Generator, textures: Sequence[Image.Image]) -> Query:
    """One shopper-style JPEG of `product` (RGBA) and where the product landed in it."""
    item = product.copy()
    item.thumbnail((900, 900), Image.Resampling.LANCZOS)
    width, height = item.size
    cw, ch = round(width * rng.uniform(0.6, 0.95)), round(height * rng.uniform(0.6, 0.95))
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    item = item.crop((left, top, left + cw, top + ch))
    item = item.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BICUBIC, expand=True)
    item = colour_jitter(item, rng, brightness=0.35, contrast=0.35, saturation=0.35, hue=0.04)
    size = frame_size(rng)
    kind = str(rng.choice(BACKDROPS))
    canvas = backdrop(kind, size, rng, textures).convert("RGBA")
    scale = float(rng.uniform(0.3, 0.9)) * min(size[0] / item.width, size[1] / item.height)
    item = item.resize(
        (max(1, round(item.width * scale)), max(1, round(item.height * scale))), Image.Resampling.BICUBIC
    )
    x, y = int(rng.integers(0, size[0] - item.width + 1)), int(rng.integers(0, size[1] - item.height + 1))
    if rng.random() < 0.5:  # a soft shadow under the product
        alpha = item.getchannel("A").filter(ImageFilter.GaussianBlur(max(2.0, item.width / 40)))
        shadow = Image.new("RGBA", item.size, (0, 0, 0, 0))
        shadow.putalpha(alpha.point(lambda a: a * 0.45))
        dx, dy = (int(v) for v in rng.integers(-item.width // 25 - 1, item.width // 25 + 2, size=2))
        canvas.alpha_composite(shadow, (min(max(x + dx, 0), size[0] - 1), min(max(y + dy, 0), size[1] - 1)))
    canvas.alpha_composite(item, (x, y))
    out = canvas.convert("RGB")
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    pixels = np.asarray(out, dtype=np.float32) + rng.normal(0, float(rng.uniform(0, 6)), size=(size[1], size[0], 3))
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=int(rng.integers(40, 81)))
    box = (x / size[0], y / size[1], (x + item.width) / size[0], (y + item.height) / size[1])
    return Query(buffer.getvalue(), sku, kind, box)


def shopper_queries(
    catalog: Sequence[CatalogPhoto], textures: Sequence[Image.Image], seed: int, per_photo: int
) -> list[Query]:
    """`per_photo` shopper photos of every catalog photo; photo i's depend only on (seed, i)."""
    queries = []
    for index, photo in enumerate(catalog):
        rng = np.random.default_rng([seed, index])
        product = cut_out(Image.open(io.BytesIO(photo.data)))
        for _ in range(per_photo):
            queries.append(shopper_photo(product, photo.product, rng, textures))
    return queries


NONSENSE = ("noise", "flat", "gradient", "scribble", "bare backdrop")


def nonsense_photo(kind: str, rng: np.random.Generator, textures: Sequence[Image.Image]) -> Image.Image:
    size = frame_size(rng)
    if kind == "noise":
        cells = (max(2, size[1] // int(rng.integers(1, 40))), max(2, size[0] // int(rng.integers(1, 40))))
        grid = rng.integers(0, 256, size=(*cells, 3), dtype=np.uint8)
        return Image.fromarray(grid, "RGB").resize(size, Image.Resampling.NEAREST)
    if kind == "flat":
        return Image.new("RGB", size, _colour(rng))
    if kind == "gradient":
        return random_background(size, rng)
    if kind == "scribble":
        out = Image.new("RGB", size, _colour(rng) if rng.random() < 0.5 else (255, 255, 255))
        draw = ImageDraw.Draw(out)
        for _ in range(int(rng.integers(1, 8))):
            points = [(float(rng.uniform(0, size[0])), float(rng.uniform(0, size[1]))) for _ in range(12)]
            draw.line(points, fill=_colour(rng), width=int(rng.integers(2, 20)), joint="curve")
        return out
    return backdrop(str(rng.choice(BACKDROPS)), size, rng, textures)


def nonsense_queries(textures: Sequence[Image.Image], seed: int = 3) -> list[Query]:
    out = []
    for k, kind in enumerate(NONSENSE):
        rng = np.random.default_rng([seed, k])
        for _ in range(NONSENSE_PER_KIND):
            buffer = io.BytesIO()
            nonsense_photo(kind, rng, textures).save(buffer, "JPEG", quality=int(rng.integers(40, 81)))
            out.append(Query(buffer.getvalue(), "", kind))
    return out


def augment_queries(catalog: Sequence[CatalogPhoto]) -> list[Query]:
    """The milder set the recall section of `bench.run` uses (bench/augment.py: 3 per Vendure photo)."""
    from bench.augment import augmented_queries

    out = []
    for index, photo in enumerate(p for p in catalog if not p.product.startswith("saleor-")):
        for image in augmented_queries(Image.open(io.BytesIO(photo.data)), seed=7, index=index, count=3):
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            out.append(Query(buffer.getvalue(), photo.product, "augment"))
    return out


# -- cached sets -----------------------------------------------------------------------------------
GENERATOR_VERSION = 1  # bump when the generator changes: cached sets of another version are rebuilt


def load_sets(cache: Path, splits: Sequence[str]) -> Sets:
    """The sets, generated once into `cache` (JPEGs and a manifest), read back on later runs."""
    folder = cache / f"shopper-photos-v{GENERATOR_VERSION}"
    manifest = folder / "manifest.json"
    static = saleor_static(cache)
    catalog = vendure_photos(cache) + saleor_photos(static)
    wanted = [*splits, "augment", "nonsense"]
    known = json.loads(manifest.read_text()) if manifest.is_file() else {}
    textures: list[Image.Image] = []
    for name in wanted:
        if name in known:
            continue
        textures = textures or banner_textures(static)
        if name == "augment":
            queries = augment_queries(catalog)
        elif name == "nonsense":
            queries = nonsense_queries(textures)
        else:
            seed, per_photo = SPLITS[name]
            queries = shopper_queries(catalog, textures, seed, per_photo)
        (folder / name).mkdir(parents=True, exist_ok=True)
        rows = []
        for i, q in enumerate(queries):
            (folder / name / f"{i:04d}.jpg").write_bytes(q.data)
            rows.append({"product": q.product, "kind": q.kind, "box": q.box})
        known[name] = rows
        manifest.write_text(json.dumps(known))
    sets = Sets(catalog=catalog, textures=textures)
    for name in wanted:
        queries = [
            Query(
                (folder / name / f"{i:04d}.jpg").read_bytes(),
                r["product"],
                r["kind"],
                tuple(r["box"]) if r["box"] else None,
            )
            for i, r in enumerate(known[name])
        ]
        if name == "nonsense":
            sets.nonsense = queries
        else:
            sets.queries[name] = queries
    return sets


# -- candidate query views -------------------------------------------------------------------------
def centre_crop(image: Image.Image, share: float) -> Image.Image:
    return Box((1 - share) / 2, (1 - share) / 2, (1 + share) / 2, (1 + share) / 2).crop(image)


def mass_box(weights: np.ndarray, tail: float = 0.03) -> Box | None:
    """The box holding the middle of a map's mass (all but `tail` on each side)."""
    total = float(weights.sum())
    if total <= 0:
        return None
    height, width = weights.shape
    across, down = np.cumsum(weights.sum(0)) / total, np.cumsum(weights.sum(1)) / total
    return Box(
        np.searchsorted(across, tail) / width,
        np.searchsorted(down, tail) / height,
        (np.searchsorted(across, 1 - tail) + 1) / width,
        (np.searchsorted(down, 1 - tail) + 1) / height,
    )


def spectral_residual_box(image: Image.Image, side: int = 64) -> Box | None:
    """Hou & Zhang's spectral-residual saliency (2007), thresholded at 2x its mean, as a mass box."""
    grey = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    spectrum = np.fft.fft2(grey)
    log_amplitude = np.log(np.abs(spectrum) + 1e-6)
    padded = np.pad(log_amplitude, 1, mode="wrap")
    local = sum(padded[i : i + side, j : j + side] for i in range(3) for j in range(3)) / 9
    saliency = np.abs(np.fft.ifft2(np.exp(log_amplitude - local + 1j * np.angle(spectrum)))) ** 2
    saliency = np.asarray(
        Image.fromarray((saliency / saliency.max() * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2.5)),
        dtype=np.float32,
    )
    return mass_box((saliency > 2 * saliency.mean()).astype(np.float32), 0.05)


def named_views(image: Image.Image) -> dict[str, Image.Image]:
    """Every view any strategy below uses, by name; fg1/fg2 come from `query_views` itself."""
    views = {
        "whole": image,
        "mirror": ImageOps.mirror(image),
        "centre 80": centre_crop(image, 0.8),
        "centre 60": centre_crop(image, 0.6),
    }
    pixels = small_rgb(image)
    for name, box in (
        ("spectral residual", spectral_residual_box(image)),
        ("border-colour mass", mass_box((border_distance_map(pixels) > DISTANCE).astype(np.float32))),
    ):
        views[name] = box.expanded().crop(image) if box else image
    kept = query_views(image)
    assert kept[0] is image
    views.update({f"fg{i}": view for i, view in enumerate(kept[1:], 1)})
    views["blob"] = kept[1] if len(kept) > 1 else image  # a crop-only query keeps the photo when nothing is found
    return views


@dataclass(frozen=True)
class Strategy:
    name: str
    views: tuple[str, ...]  # named views; fg1/fg2 are absent where the localiser found nothing
    fusion: str  # "max": best cosine over the views | "mean": one vector, the views' normalised mean
    kept: bool = False


STRATEGIES = (
    Strategy("today: the whole photo (baseline)", ("whole",), "max"),
    Strategy("test-time mirror, mean", ("whole", "mirror"), "mean"),
    Strategy("centre crop 80 %", ("centre 80",), "max"),
    Strategy("centre crops 100/80/60 %, best", ("whole", "centre 80", "centre 60"), "max"),
    Strategy("spectral-residual saliency crop", ("spectral residual",), "max"),
    Strategy("border-colour mass crop", ("border-colour mass",), "max"),
    Strategy("foreground blob crop only", ("blob",), "max"),
    Strategy("whole + border-colour mass crop, best", ("whole", "border-colour mass"), "max"),
    Strategy("whole + foreground blobs, mean (`query_embedding`)", ("whole", "fg1", "fg2"), "mean", kept=True),
    Strategy("whole + foreground blobs, best (`query_vectors`)", ("whole", "fg1", "fg2"), "max", kept=True),
    Strategy("whole + foreground blobs + mirror, best", ("whole", "fg1", "fg2", "mirror"), "max"),
)


# -- measuring ---------------------------------------------------------------------------------------
EMBEDDERS = ("offline", "offline-pad", "vit-b-32")
LATENCY_ONLY = {"vit-b-32"}  # random weights (no model hub here): its recall would be noise, its speed is real


def build_embedder(name: str, cache: Path) -> Embedder:
    """The default offline embedder, its pad-to-square framing, or ViT-B-32's architecture."""
    if name == "vit-b-32":
        from bench.run import vit_b32_dir
        from services.embedders.openclip import OpenClipEmbedder

        return OpenClipEmbedder(f"local-dir:{vit_b32_dir(cache)}", None, device="cpu")
    from services.embedders.offline import OfflineEmbedder

    variants = {"offline": "crop-gem", "offline-pad": "pad-avg"}
    if name not in variants:
        raise SystemExit(f"unknown embedder {name} (choose from {', '.join(EMBEDDERS)})")
    return OfflineEmbedder(device="cpu", variant=variants[name])


class ViewVectors:
    """The vectors of every named view of a list of photos, each view embedded once for all strategies."""

    def __init__(self, embedder: Embedder, images: Sequence[Image.Image]):
        self.count = len(images)
        self.dim = embedder.identity.image_dim
        self.vectors: dict[str, np.ndarray] = {}
        self.boxes: list[list[Box]] = []
        pending: dict[str, list[tuple[int, Image.Image]]] = {}
        for index, image in enumerate(images):
            for name, view in named_views(image).items():
                pending.setdefault(name, []).append((index, view))
            self.boxes.append(foreground_boxes(image))
        for name, items in pending.items():
            result = embedder.embed_images([view for _, view in items])
            if result.errors:
                raise RuntimeError(f"view {name}: {result.errors}")
            matrix = np.full((self.count, self.dim), np.nan, dtype=np.float32)
            matrix[[i for i, _ in items]] = result.vectors
            self.vectors[name] = matrix

    def views_per_photo(self, strategy: Strategy) -> float:
        present = [~np.isnan(self.vectors[v][:, 0]) for v in strategy.views if v in self.vectors]
        return float(np.sum(present, axis=0).mean())

    def product_scores(self, strategy: Strategy, catalog: np.ndarray, owner: np.ndarray, products: int) -> np.ndarray:
        """(photos, products): each product's best photo under the strategy's fusion."""
        present = [self.vectors[v] for v in strategy.views if v in self.vectors]
        if strategy.fusion == "mean":
            stacked = np.stack(present, axis=1)  # (photos, views, dim), NaN rows where a view is absent
            fused = [fused_vector(views[~np.isnan(views[:, 0])]) for views in stacked]
            photo_scores = np.stack(fused) @ catalog.T
        else:
            photo_scores = np.nanmax(
                np.stack([np.where(np.isnan(m[:, :1]), -np.inf, m @ catalog.T) for m in present]), axis=0
            )
        out = np.full((self.count, products), -np.inf, dtype=np.float32)
        for product in range(products):
            out[:, product] = photo_scores[:, owner == product].max(axis=1)
        return out


def recall_at(scores: np.ndarray, truth: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    rank = (scores > scores[np.arange(len(truth)), truth][:, None]).sum(axis=1)
    return {f"R@{k}": float(np.mean(rank < k)) for k in ks}


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (5, 50, 95)} | {"max": float(values.max())}


def box_iou(found: Sequence[Box], truth: tuple[float, float, float, float] | None) -> float:
    return found[0].iou(Box(*truth)) if found and truth else 0.0


def measure(name: str, sets: Sets, splits: Sequence[str], limits: ImageLimits, cache: Path) -> dict:
    """Every strategy on every set for one embedder (only the latency for a LATENCY_ONLY one)."""
    embedder = build_embedder(name, cache)
    if name in LATENCY_ONLY:
        photos = [decode_for_model(q.data, limits)[0] for q in sets.queries[splits[-1]][:LATENCY_PHOTOS]]
        return {"embedder": embedder.identity.describe(), "latency": latency(embedder, photos)}
    catalog_images = [decode_for_model(photo.data, limits)[0] for photo in sets.catalog]
    result = embedder.embed_images(catalog_images)  # as ingestion embeds them
    catalog = result.vectors
    products = sorted({photo.product for photo in sets.catalog})
    owner = np.array([products.index(photo.product) for photo in sets.catalog])
    out: dict = {
        "embedder": embedder.identity.describe(),
        "catalog_photos": len(catalog),
        "products": len(products),
        "augment_queries": len(sets.queries["augment"]),
    }

    def decoded(queries: Sequence[Query]) -> list[Image.Image]:
        return [decode_for_model(q.data, limits)[0] for q in queries]  # today's query path: the API's decode

    clean = ViewVectors(embedder, catalog_images)
    nonsense = ViewVectors(embedder, decoded(sets.nonsense))
    per_set = {}
    for split in [*splits, "augment"]:
        queries = sets.queries[split]
        started = time.perf_counter()
        views = ViewVectors(embedder, decoded(queries))
        truth = np.array([products.index(q.product) for q in queries])
        ious = np.array([box_iou(b, q.box) for b, q in zip(views.boxes, queries, strict=True)])
        per_set[split] = {"queries": len(queries), "views": views, "truth": truth, "iou": ious}
        print(
            f"{name} {split}: {len(queries)} photos, views embedded in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    rows = []
    for strategy in STRATEGIES:
        row: dict = {"strategy": strategy.name, "views": len(strategy.views), "kept": strategy.kept}
        for split, data in per_set.items():
            scores = data["views"].product_scores(strategy, catalog, owner, len(products))
            row[split] = recall_at(scores, data["truth"])
            if split == splits[-1]:
                row["real_top1"] = quantiles(scores.max(axis=1))
        own = clean.product_scores(strategy, catalog, owner, len(products))
        row["clean"] = recall_at(own, owner, (1,))["R@1"]
        row["clean_min_self"] = float(own[np.arange(len(owner)), owner].min())
        row["nonsense_top1"] = quantiles(nonsense.product_scores(strategy, catalog, owner, len(products)).max(axis=1))
        row["views_per_photo"] = per_set[splits[-1]]["views"].views_per_photo(strategy)
        rows.append(row)
    out["rows"] = rows
    out["sets"] = {
        split: {
            "queries": d["queries"],
            "iou_median": float(np.median(d["iou"])),
            "iou_half": float(np.mean(d["iou"] >= 0.5)),
        }
        for split, d in per_set.items()
        if split != "augment"
    }
    out["latency"] = latency(embedder, decoded(sets.queries[splits[-1]][:LATENCY_PHOTOS]))
    return out


def latency(embedder: Embedder, images: Sequence[Image.Image]) -> dict[str, float]:
    """Median ms per photo: today's one embedding, finding the boxes, and the views as one batch."""
    embedder.embed_images(images[:2])  # warm-up
    one, find, batch, views = [], [], [], []
    for image in images:
        started = time.perf_counter()
        embedder.embed_image(image)
        one.append(time.perf_counter() - started)
        started = time.perf_counter()
        kept = query_views(image)
        find.append(time.perf_counter() - started)
        started = time.perf_counter()
        embedder.embed_images(kept)
        batch.append(time.perf_counter() - started)
        views.append(len(kept))
    return {
        "one_ms": 1000 * float(np.median(one)),
        "find_ms": 1000 * float(np.median(find)),
        "views_ms": 1000 * float(np.median(batch)),
        "views": float(np.mean(views)),
    }


# -- report ------------------------------------------------------------------------------------------
INTRO = """\
`python -m bench.shopper_photos` on {date} in {minutes:.0f} min (also run by `python -m bench.run`). Issue 11, part 4:
object-centred query views beside today's query (the whole photo, one embedding), all in the same run.

- Catalog: the Vendure sample's 54 product photos and the Saleor demo shop's products ({photos} photos of {products}
  products; a product's best photo counts), decoded and embedded as ingestion does; exact cosine in numpy.
- Shopper photos, generated at run time from fixed seeds: each catalog photo (Saleor's as its cut-out) cropped to
  60–95 %, rotated ±15°, colour-jittered, sometimes shadowed, pasted at 30–90 % of the frame at a random spot on a
  cluttered backdrop (random shapes, stripes/checks/dots, value noise, gradients, zoomed room photos), then noise or
  blur and JPEG quality 40–80 at 640–1600 px, decoded by today's query path (`decode_for_model`). The views and their
  settings were chosen on the tune split ({tune} photos, seed 1); the held-out split ({held} photos, seed 2) reports.
  `augment`: the milder set of the recall section above (bench/augment.py, {augment} Vendure photos).
- Clean: each catalog photo searched as ingested: R@1 of its own product (its lowest own score in brackets).
- Nonsense: {nonsense} photos without a product ({kinds}, {per_kind} each).
  Their top-1 scores beside the real held-out photos' are what a "no good match" threshold has to separate.
- "best": every catalog vector is scored against each view and keeps its best cosine (`query_vectors` +
  `best_over_views`); "mean": one query vector (`query_embedding`: half the whole photo, half the crops' mean).
  Views: embeddings per held-out photo, on average. Bold: what services/query_views.py keeps (DashScope, billed
  per image, keeps one view unless asked: `default_views`)."""


def section(results: dict[str, dict], splits: Sequence[str], seconds: float) -> str:
    """This benchmark's part of BENCHMARKS.md."""
    report, measured = splits[-1], {k: v for k, v in results.items() if "rows" in v}
    first = next(iter(measured.values()))
    lines = [
        HEADING,
        "",
        INTRO.format(
            date=time.strftime("%Y-%m-%d"),
            minutes=seconds / 60,
            photos=first["catalog_photos"],
            products=first["products"],
            tune=first["sets"]["tune"]["queries"],
            held=first["sets"][report]["queries"],
            augment=first["augment_queries"],
            nonsense=len(NONSENSE) * NONSENSE_PER_KIND,
            kinds=", ".join(NONSENSE),
            per_kind=NONSENSE_PER_KIND,
        ),
    ]
    for name, result in measured.items():
        held = result["sets"][report]
        lines += [
            "",
            f"**{result['embedder']}** (`{name}`): the localiser's first box against where the product was pasted "
            f"(held-out): IoU median {held['iou_median']:.2f}, ≥ 0.5 for {held['iou_half']:.0%} of the photos.",
            "",
            f"| strategy | views | {report} R@1 | R@5 | R@10 | tune R@1 | augment R@1 | clean R@1 (lowest own) | "
            "real top-1 p5 / p50 | nonsense top-1 p50 / p95 / max |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["rows"]:
            scores, real, junk = row[report], row["real_top1"], row["nonsense_top1"]
            label = f"**{row['strategy']}**" if row["kept"] else row["strategy"]
            lines.append(
                f"| {label} | {row['views_per_photo']:.1f} | {scores['R@1']:.3f} | {scores['R@5']:.3f} | "
                f"{scores['R@10']:.3f} | {row['tune']['R@1']:.3f} | {row['augment']['R@1']:.3f} | "
                f"{row['clean']:.3f} ({row['clean_min_self']:.2f}) | {real['p5']:.2f} / {real['p50']:.2f} | "
                f"{junk['p50']:.2f} / {junk['p95']:.2f} / {junk['max']:.2f} |"
            )
    lines += [
        "",
        f"What the kept views cost per photo: medians over {LATENCY_PHOTOS} held-out photos, one at a time, 1 torch "
        "thread on the shared",
        "2-core machine. ViT-B-32 runs with random weights (no model hub here): its speed is the real "
        "architecture's, its recall",
        "would be noise and is not measured.",
        "",
        "| embedder | today: 1 embedding | finding the boxes | the views as one batch (views per photo) | ratio |",
        "|---|---|---|---|---|",
    ]
    for result in results.values():
        lat = result["latency"]
        total = lat["find_ms"] + lat["views_ms"]
        lines.append(
            f"| {result['embedder']} | {lat['one_ms']:.0f} ms | {lat['find_ms']:.0f} ms | {lat['views_ms']:.0f} ms "
            f"({lat['views']:.1f}) | {total / lat['one_ms']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def write_section(text: str, out: Path) -> None:
    """This benchmark's section of BENCHMARKS.md, replaced (or appended)."""
    sections.write_section(text, out, HEADING)


def run(embedders: Sequence[str], cache: Path, splits: Sequence[str] = ("tune", "held-out")) -> dict[str, dict]:
    sets = load_sets(cache, splits)
    limits = ImageLimits()
    return {name: measure(name, sets, splits, limits, cache) for name in embedders}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shopper_photos", description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", default=",".join(EMBEDDERS), help=f"comma-separated: {', '.join(EMBEDDERS)}")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoplens-bench")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="'-' to print only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2 shared cores: 1 contends least)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    results = run(args.embedders.split(","), args.cache)
    print(json.dumps(results, indent=1), flush=True)
    text = section(results, ("tune", "held-out"), time.perf_counter() - started)
    print(text, flush=True)
    if str(args.out) != "-":
        write_section(text, args.out)


if __name__ == "__main__":
    main()

"""Safe image loading: every way an image can be bad becomes an ImageError for that image only."""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.errors import ShopLensError
from services.fetch import FetchError, fetch_capped, is_url


@dataclass(frozen=True)
class ImageFormat:
    label: str  # how people name it
    suffixes: tuple[str, ...]  # a file's name ends so; the first is what a stored copy gets
    photo: bool  # a shopper may search with it: what phones, cameras and browsers make


# The one table of image formats, by Pillow's name; everything below is derived from it.
IMAGE_FORMATS = {
    "JPEG": ImageFormat("JPEG", (".jpg", ".jpeg"), photo=True),
    "MPO": ImageFormat("JPEG", (".jpg",), photo=True),  # a camera's JPEG with a second picture inside
    "PNG": ImageFormat("PNG", (".png",), photo=True),
    "WEBP": ImageFormat("WebP", (".webp",), photo=True),
    "GIF": ImageFormat("GIF", (".gif",), photo=False),
    "BMP": ImageFormat("BMP", (".bmp",), photo=False),
    "TIFF": ImageFormat("TIFF", (".tif", ".tiff"), photo=False),
}
ALLOWED_FORMATS = frozenset(IMAGE_FORMATS)  # what a catalog's images may be
EXTENSIONS = {name: f.suffixes[0] for name, f in IMAGE_FORMATS.items()}  # a stored copy's suffix
IMAGE_SUFFIXES = frozenset(s for f in IMAGE_FORMATS.values() for s in f.suffixes)  # catalog image files
PHOTO_FORMATS = frozenset(name for name, f in IMAGE_FORMATS.items() if f.photo)  # a shopper's photo
PHOTO_SUFFIXES = frozenset(s for f in IMAGE_FORMATS.values() if f.photo for s in f.suffixes)


def format_labels(photo: bool = False) -> str:
    """The formats in words, for messages: "JPEG, PNG or WebP" (`photo`: a shopper's photo only)."""
    labels = list(dict.fromkeys(f.label for f in IMAGE_FORMATS.values() if f.photo or not photo))
    return f"{', '.join(labels[:-1])} or {labels[-1]}"


def is_image_name(name: str) -> bool:
    """A file name (or path) with a catalog image's suffix."""
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


# Pillow's own bomb check is a second line of defence; ours runs first with a clear message.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ShopLensError):
    """This image cannot be used; the message says why in words a merchant understands."""

    code = "bad_image"
    http_status = 422
    prefix = "We couldn't use this photo: "


class ImageFetchError(ImageError):
    """The image's URL could not be downloaded (down, too slow, refused): perhaps only for now."""

    code = "fetch_failed"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    url_timeout: float = 15.0  # each connect and read
    url_deadline: float = 120.0  # the whole download


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_image_bytes(ref: str, base_dir: Path | None, limits: ImageLimits) -> bytes:
    """Bytes of a local path (relative to the catalog's folder) or an http(s) URL, size-capped."""
    return _read_url(ref, limits) if is_url(ref) else _read_path(ref, base_dir, limits)


def local_path(ref: str, base_dir: Path | None) -> Path:
    """Where a catalog's local image name points: `~` expanded, relative to the catalog's folder."""
    path = Path(ref).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _read_path(ref: str, base_dir: Path | None, limits: ImageLimits) -> bytes:
    path = local_path(ref, base_dir)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"image file not found: {ref}") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {ref}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise ImageError(f"not a file: {ref}")
    if size == 0:
        raise ImageError(f"image file is empty: {ref}")
    if size > limits.max_bytes:
        raise ImageError(f"image file is too large ({size:,} bytes, limit {limits.max_bytes:,}): {ref}")
    return path.read_bytes()


def _read_url(url: str, limits: ImageLimits) -> bytes:
    try:
        data = fetch_capped(url, limits.max_bytes, limits.url_timeout, deadline=limits.url_deadline).data
    except FetchError as exc:
        raise ImageFetchError(f"image URL {exc}: {url}") from None
    if not data:
        raise ImageError(f"image URL returned no data: {url}")
    return data


def probe_format(data: bytes, limits: ImageLimits, short_side: int | None = None) -> tuple[str, int, int]:
    """Format and size from the header alone, so a decompression bomb is refused before decoding.

    With `short_side`, a JPEG is judged by the pixels it decodes to at the reduced DCT scale that
    still gives that short side (what `decode_scaled` does): a 48-megapixel phone photo decodes
    to under a megapixel for the model, so it is no bomb.
    """
    if not data:
        raise ImageError("empty image data")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image is too large ({len(data):,} bytes, limit {limits.max_bytes:,})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format or "", img.size
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Exception as exc:  # Pillow raises many kinds on malformed headers
        raise ImageError(f"unreadable image header ({exc.__class__.__name__}: {exc})") from None
    if fmt not in ALLOWED_FORMATS:
        raise ImageError(f"unsupported image format {fmt or 'unknown'} (use {format_labels()})")
    if width <= 0 or height <= 0:
        raise ImageError("image has no pixels")
    scale = _jpeg_scale(min(width, height), short_side) if fmt in {"JPEG", "MPO"} else 1
    if math.ceil(width / scale) * math.ceil(height / scale) > limits.max_pixels:
        raise ImageError(f"image dimensions {width}x{height} exceed the limit of {limits.max_pixels:,} pixels")
    return fmt, width, height


def _jpeg_scale(short: int, wanted: int | None) -> int:
    """The DCT reduction (1, 2, 4 or 8) Pillow's draft mode picks for a short side of `wanted`."""
    if not wanted:
        return 1
    return next((s for s in (8, 4, 2) if math.ceil(short / s) >= wanted), 1)


ORIENTATION = 0x0112  # the EXIF tag
MODEL_MAX_SIDE = 1024  # models look at ~224 px; a bounded copy caps memory per batch
MODEL_SHORT_SIDE = 256  # the models resize the short side to 224-256 px, then crop


def decode_for_model(data: bytes, limits: ImageLimits) -> tuple[Image.Image, tuple[int, int]]:
    """What an embedder needs of a photo (catalog or query), and the full picture's size."""
    return decode_scaled(data, limits, MODEL_SHORT_SIDE, MODEL_MAX_SIDE)


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """A fully decoded RGB image with EXIF orientation applied and transparency on white."""
    return decode_scaled(data, limits)[0]


def decode_scaled(
    data: bytes, limits: ImageLimits, short_side: int | None = None, max_side: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """The image (RGB, upright) with at least `short_side` pixels on its short side where the
    picture has them and at most `max_side` on its long side, and the full picture's upright size.

    JPEGs are decoded at a reduced DCT scale when the model needs fewer pixels (Pillow's
    draft mode): the whole stream is still read, so a truncated file fails the same way, at a
    fraction of the cost of decoding every pixel of a camera photo.
    """
    probe_format(data, limits, short_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img: Image.Image = Image.open(io.BytesIO(data))
            width, height = img.size
            if short_side is not None and min(width, height) > short_side:
                scale = short_side / min(width, height)
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # stored sideways
                width, height = height, width
            img = upright_rgb(img)
            if max_side is not None:
                img.thumbnail((max_side, max_side))
            return img, (width, height)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"corrupt or truncated image ({exc.__class__.__name__}: {exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency (an alpha channel, or a palette's or a PNG's
    transparent colour) becomes white (how shops show products)."""
    if img.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi == lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if img.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")  # L, 1, P, CMYK (Pillow handles Adobe's inverted JPEGs), YCbCr, …


def upright_rgb(img: Image.Image) -> Image.Image:
    """`to_rgb` of the picture as it is meant to be seen: its EXIF orientation applied.

    An upright picture is passed on as it is: Pillow's exif_transpose copies it, a whole
    frame per catalog photo in the ingest's decode threads and again in the model's own thread."""
    if img.getexif().get(ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def load_image(ref: str, base_dir: Path | None, limits: ImageLimits) -> Image.Image:
    """A query photo by name (`shoplens eval`), decoded exactly as ingestion and the API decode
    theirs, so that a catalog photo searched as it was ingested scores 1.0."""
    return decode_for_model(read_image_bytes(ref, base_dir, limits), limits)[0]


def square_thumbnail(data: bytes, size: int, limits: ImageLimits, quality: int = 85) -> bytes:
    """A square JPEG of a product photo, padded on white so the whole product stays visible
    (how shops show products); decoded at a reduced scale, as small as the square needs."""
    probe_format(data, limits, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img: Image.Image = Image.open(io.BytesIO(data))
            img.draft("RGB", (size, size))
            img = upright_rgb(img)
            square = ImageOps.pad(img, (size, size), color=(255, 255, 255))
    except Exception as exc:
        raise ImageError(f"corrupt or truncated image ({exc.__class__.__name__}: {exc})") from None
    out = io.BytesIO()
    square.save(out, "JPEG", quality=quality)
    return out.getvalue()

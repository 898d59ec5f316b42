"""Safe image loading: modes, orientation, limits, URLs (against a real local HTTP server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.images import ImageError, ImageLimits, decode_image, read_image_bytes
from tests.support.http_server import RouteServer

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000, url_timeout=1.0)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make, fmt",
    [
        (lambda: Image.new("P", (20, 10), 3), "PNG"),
        (lambda: Image.new("RGBA", (20, 10), (255, 0, 0, 0)), "PNG"),
        (lambda: Image.new("LA", (20, 10), (10, 0)), "PNG"),
        (lambda: Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG"),
        (lambda: Image.new("L", (20, 10), 128), "JPEG"),
        (lambda: Image.new("1", (20, 10), 1), "PNG"),
        (lambda: Image.fromarray(np.full((10, 20), 40000, dtype=np.uint16)), "PNG"),
        (lambda: Image.new("RGB", (20, 10), (1, 2, 3)), "WEBP"),
        (lambda: Image.new("RGB", (20, 10), (1, 2, 3)), "TIFF"),
        (lambda: Image.new("RGB", (20, 10), (1, 2, 3)), "BMP"),
        (lambda: Image.new("RGB", (20, 10), (1, 2, 3)), "GIF"),
    ],
)
def test_every_mode_becomes_rgb(make, fmt: str) -> None:
    img = decode_image(encode(make(), fmt), LIMITS)
    assert img.mode == "RGB" and img.size == (20, 10)


def test_transparency_becomes_white() -> None:
    img = decode_image(encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"), LIMITS)
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_colours_survive() -> None:
    red, green, blue = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), LIMITS).getpixel(
        (4, 4)
    )
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()), LIMITS)
    assert decoded.size == (20, 40)


def test_limits() -> None:
    with pytest.raises(ImageError, match="exceed the limit"):
        decode_image(encode(Image.new("L", (3000, 2000)), "PNG"), LIMITS)
    with pytest.raises(ImageError, match="too large"):
        decode_image(b"\x89PNG" + b"0" * LIMITS.max_bytes, LIMITS)
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", LIMITS)


def test_urls(route_server: RouteServer) -> None:
    image_server = route_server.url
    good = encode(Image.new("RGB", (10, 10), (9, 9, 9)), "PNG")
    route_server.routes.update(
        {
            "/ok.png": (200, "image/png", good, 0.0),
            "/big.png": (200, "image/png", b"x" * (LIMITS.max_bytes + 1), 0.0),
            "/slow.png": (200, "image/png", good, 3.0),
            "/gone.png": (500, "text/plain", b"err", 0.0),
        }
    )
    assert read_image_bytes(f"{image_server}/ok.png", None, LIMITS) == good
    with pytest.raises(ImageError, match="too large"):
        read_image_bytes(f"{image_server}/big.png", None, LIMITS)
    with pytest.raises(ImageError, match="timed out"):
        read_image_bytes(f"{image_server}/slow.png", None, LIMITS)
    with pytest.raises(ImageError, match="HTTP 404"):
        read_image_bytes(f"{image_server}/missing.png", None, LIMITS)
    with pytest.raises(ImageError, match="HTTP 500"):
        read_image_bytes(f"{image_server}/gone.png", None, LIMITS)
    with pytest.raises(ImageError, match="unreachable"):
        read_image_bytes("http://127.0.0.1:9/none.png", None, LIMITS)


def test_local_path_problems(tmp_path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "big.jpg").write_bytes(b"\xff" * (LIMITS.max_bytes + 1))
    with pytest.raises(ImageError, match="not a file: folder.jpg"):
        read_image_bytes("folder.jpg", tmp_path, LIMITS)
    with pytest.raises(ImageError, match="image file is too large"):
        read_image_bytes("big.jpg", tmp_path, LIMITS)
    small = encode(Image.new("RGB", (4, 4)), "PNG")
    (tmp_path / "ok.png").write_bytes(small)
    assert read_image_bytes(str(tmp_path / "ok.png"), None, LIMITS) == small  # absolute paths need no base

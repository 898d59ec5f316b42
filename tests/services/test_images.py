"""Safe image loading: modes, orientation, limits, URLs (against a real local HTTP server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.images import (
    EXTENSIONS,
    IMAGE_SUFFIXES,
    PHOTO_FORMATS,
    PHOTO_SUFFIXES,
    ImageError,
    ImageLimits,
    decode_image,
    format_labels,
    is_image_name,
    probe_format,
    read_image_bytes,
    to_rgb,
    upright_rgb,
)
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


def turned() -> bytes:
    """EXIF that says: rotate 90° clockwise when shown."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def reopened(img: Image.Image, **kw: object) -> Image.Image:
    return Image.open(io.BytesIO(encode(img, "PNG", **kw)))


def test_to_rgb_puts_every_kind_of_transparency_on_white() -> None:
    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # fully transparent black
    rgba.paste((200, 0, 0, 255), (10, 5, 30, 15))  # an opaque red product in the middle
    half = Image.new("LA", (4, 4), (0, 128))  # half-transparent black
    palette = Image.new("P", (8, 8), 0)  # a palette PNG with a transparent index (product mock-ups)
    palette.putpalette([0, 0, 0, 200, 0, 0])
    palette.paste(1, (2, 2, 6, 6))
    keyed = Image.new("RGB", (8, 8), (0, 0, 0))  # a PNG whose black is its transparent colour
    keyed.paste((200, 0, 0), (2, 2, 6, 6))
    grey = Image.new("L", (8, 8), 0)
    grey.paste(90, (2, 2, 6, 6))
    cases = [
        (rgba, (0, 0), (255, 255, 255), (20, 10), (200, 0, 0)),
        (half, (0, 0), (127, 127, 127), (3, 3), (127, 127, 127)),
        (reopened(palette, transparency=0), (0, 0), (255, 255, 255), (3, 3), (200, 0, 0)),
        (reopened(keyed, transparency=(0, 0, 0)), (0, 0), (255, 255, 255), (3, 3), (200, 0, 0)),
        (reopened(grey, transparency=0), (0, 0), (255, 255, 255), (3, 3), (90, 90, 90)),
    ]
    for img, clear, clear_colour, solid, solid_colour in cases:
        flat = to_rgb(img)
        assert flat.mode == "RGB" and flat.size == img.size and "transparency" not in flat.info, img
        assert flat.getpixel(clear) == clear_colour and flat.getpixel(solid) == solid_colour, img
    plain = Image.new("RGB", (4, 4), (1, 2, 3))
    assert to_rgb(plain) is plain  # nothing to do: no copy


def test_to_rgb_stretches_16_bit_and_upright_rgb_turns_the_photo() -> None:
    ramp = Image.fromarray(np.array([[1000, 3000], [5000, 9000]], dtype=np.uint16))
    assert [to_rgb(ramp).getpixel(xy) for xy in ((0, 0), (1, 1))] == [(0, 0, 0), (255, 255, 255)]
    sideways = reopened(Image.new("RGBA", (40, 20), (0, 0, 255, 0)), exif=turned())
    upright = upright_rgb(sideways)
    assert upright.mode == "RGB" and upright.size == (20, 40) and upright.getpixel((0, 0)) == (255, 255, 255)
    straight = reopened(Image.new("RGB", (40, 20), (9, 9, 9)))
    straight.load()
    assert upright_rgb(straight) is straight  # upright already: no copy of the frame


def test_cmyk_colours_survive() -> None:
    red, green, blue = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), LIMITS).getpixel(
        (4, 4)
    )
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    decoded = decode_image(encode(img, "JPEG", exif=turned()), LIMITS)
    assert decoded.size == (20, 40)


def test_one_table_of_formats() -> None:
    assert IMAGE_SUFFIXES == {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    assert PHOTO_FORMATS == {"JPEG", "MPO", "PNG", "WEBP"} and PHOTO_SUFFIXES == {".jpg", ".jpeg", ".png", ".webp"}
    assert EXTENSIONS["MPO"] == EXTENSIONS["JPEG"] == ".jpg" and EXTENSIONS["TIFF"] == ".tif"
    assert format_labels() == "JPEG, PNG, WebP, GIF, BMP or TIFF" and format_labels(photo=True) == "JPEG, PNG or WebP"
    assert is_image_name("shots/A.TIFF") and is_image_name("a.jpeg") and not is_image_name("a.svg")
    assert not is_image_name("jpg")
    with pytest.raises(ImageError, match=r"unsupported image format ICO \(use JPEG, PNG, WebP, GIF, BMP or TIFF\)"):
        probe_format(encode(Image.new("RGB", (16, 16)), "ICO"), LIMITS)


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

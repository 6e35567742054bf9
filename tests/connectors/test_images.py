"""Image decoding (errors name the input, EXIF orientation, pixel limits) and PNG encoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from connectors.images import ImageDecodeError, decode_image, encode_mask_png, encode_png

NAME = "s3://bucket/some dir/photo-01.jpg"


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.clip(127 + 120 * np.sin(xx / 5.0) * np.cos(yy / 4.0), 0, 255).astype(np.uint8)


def _encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _with_orientation(array: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encoded(array, fmt, exif=exif.tobytes())


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def _black_bilevel_png(side: int) -> bytes:
    """A valid all-black 1-bit PNG, side x side, written by hand so it is cheap even when huge."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * side, 1))
        + _png_chunk(b"IEND", b"")
    )


# --- decode_image ------------------------------------------------------------------------------


def _jpeg() -> bytes:
    return _encoded(_smooth(30, 40), "JPEG", quality=90)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image at all\n", "not a recognised image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, None),  # a PNG signature and nothing valid after it
        (_jpeg()[: len(_jpeg()) // 2], "cannot decode"),  # truncated JPEG
        (_jpeg()[:200], None),
    ],
    ids=["empty", "garbage", "png-signature-only", "truncated-jpeg-half", "truncated-jpeg-head"],
)
def test_decode_errors_name_the_input(data, reason):
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_image(data, NAME)
    assert str(info.value).startswith(NAME)
    assert isinstance(info.value, ValueError)


def test_over_the_pixel_limit_raises_naming_the_input():
    data = _encoded(_rgb(30, 40), "PNG")
    with pytest.raises(ImageDecodeError, match="pixel limit") as info:
        decode_image(data, NAME, max_pixels=30 * 40 - 1)
    assert NAME in str(info.value)


def test_exactly_at_the_pixel_limit_decodes():
    image = decode_image(_encoded(_rgb(30, 40), "PNG"), NAME, max_pixels=30 * 40)
    assert image.size == (40, 30)


def test_image_under_max_pixels_but_over_pillows_default_limit_decodes():
    side = 9500  # 90.25 MP: above Pillow's default limit (89,478,485), far below MAX_IMAGE_PIXELS
    image = decode_image(_black_bilevel_png(side), NAME)
    assert image.size == (side, side)


def test_valid_png_decodes_exactly():
    rgb = _rgb(13, 21)
    image = decode_image(_encoded(rgb, "PNG"), NAME)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), rgb)


def test_valid_jpeg_decodes_close_to_the_original():
    grey = _smooth(30, 40)
    image = decode_image(_encoded(np.dstack([grey] * 3), "JPEG", quality=95), NAME)
    assert image.size == (40, 30)
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image)[..., 0].astype(int) - grey).mean() < 3


def test_exif_orientation_6_is_applied_to_a_jpeg():
    image = decode_image(_with_orientation(_rgb(30, 40), "JPEG", 6), NAME)
    assert image.size == (30, 40)  # width and height swapped


def test_exif_orientation_6_rotates_the_pixels_clockwise():
    rgb = _rgb(30, 40, seed=3)
    image = decode_image(_with_orientation(rgb, "PNG", 6), NAME)
    np.testing.assert_array_equal(np.asarray(image), np.rot90(rgb, k=-1))
    assert image.getexif().get(0x0112, 1) == 1  # not applied twice downstream


def test_exif_orientation_1_leaves_the_image_alone():
    rgb = _rgb(30, 40, seed=4)
    image = decode_image(_with_orientation(rgb, "PNG", 1), NAME)
    np.testing.assert_array_equal(np.asarray(image), rgb)


# --- encode_mask_png ---------------------------------------------------------------------------


def _decoded_grey(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.mode == "L"
        return np.asarray(image).copy()


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (37, 53)])
@pytest.mark.parametrize("kind", ["random", "smooth", "zeros", "full", "stripes"])
def test_mask_png_round_trips_exactly(shape, kind):
    h, w = shape
    mask = {
        "random": lambda: np.random.default_rng(h * 100 + w).integers(0, 256, shape, dtype=np.uint8),
        "smooth": lambda: _smooth(h, w),
        "zeros": lambda: np.zeros(shape, np.uint8),
        "full": lambda: np.full(shape, 255, np.uint8),
        "stripes": lambda: np.where(np.arange(h)[:, None] % 2, 255, 0).repeat(w, 1).astype(np.uint8),
    }[kind]()
    np.testing.assert_array_equal(_decoded_grey(encode_mask_png(mask)), mask)


def test_mask_png_of_a_non_contiguous_view_round_trips():
    mask = np.random.default_rng(9).integers(0, 256, (20, 30), dtype=np.uint8)
    view = mask[::2, ::3].T
    np.testing.assert_array_equal(_decoded_grey(encode_mask_png(view)), view)


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4), np.uint16),
        np.zeros((4, 4), bool),
        np.zeros((4, 4), np.int8),
        np.zeros((4, 4, 1), np.uint8),
        np.zeros((4, 4, 3), np.uint8),
        np.zeros(4, np.uint8),
    ],
    ids=["float32", "uint16", "bool", "int8", "hxwx1", "hxwx3", "1d"],
)
def test_mask_png_rejects_non_uint8_or_non_2d(mask):
    with pytest.raises(ValueError, match="H x W uint8"):
        encode_mask_png(mask)


# --- encode_png --------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (9, 13)])
def test_png_round_trips_rgb_and_rgba(shape, channels):
    array = np.random.default_rng(channels).integers(0, 256, (*shape, channels), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(array))) as image:
        assert image.format == "PNG"
        assert image.mode == ("RGBA" if channels == 4 else "RGB")
        np.testing.assert_array_equal(np.asarray(image), array)

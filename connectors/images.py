"""Decoding and encoding of image files, with errors that name the input."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageDecodeError", "decode_image", "encode_png"]

#: Refuse images above this many pixels (decompression bombs); tiled scene inputs bypass this.
MAX_IMAGE_PIXELS = 20_000 * 20_000


class ImageDecodeError(ValueError):
    """The bytes are not a readable image."""


def decode_image(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Bytes -> fully decoded PIL image with EXIF orientation applied.

    Raises ImageDecodeError naming `name` for empty, truncated, non-image, zero-size or
    over-large (decompression bomb) inputs.
    """
    if not data:
        raise ImageDecodeError(f"{name}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise ImageDecodeError(
                    f"{name}: {image.width}x{image.height} exceeds the {max_pixels} pixel limit (decompression bomb?)"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a recognised image format") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageDecodeError(f"{name}: cannot decode image ({exc})") from None
    if image.width == 0 or image.height == 0:
        raise ImageDecodeError(f"{name}: image has zero size")
    return image


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 H x W (mask) or H x W x 4 (cut-out) -> PNG bytes; low compression keeps encoding cheap."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()

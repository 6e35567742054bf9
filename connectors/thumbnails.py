"""Small PNG previews for reports: the image, its mask as a tinted overlay, and the cut-out.

Pillow only. A preview never pays for a full decode of a huge file: JPEGs decode at 1/2 to 1/8
scale (``draft``), multi-page TIFFs such as the job's COG masks are read from their smallest
overview that is still large enough, and whatever is still above ``max_pixels`` after that is
refused with a reason instead of decoded. Nothing here raises for a bad input (missing bytes,
not an image, truncated, unsupported mode): every function returns a ``Thumbnail`` whose ``png``
is None and whose ``note`` says why, so one bad file never stops a report.

Use ``preview`` once per file and ``triptych`` for the three cells of one gallery entry; the
``*_png`` functions are the same from bytes in one call.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, NamedTuple, cast

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_PREVIEW_PIXELS",
    "Preview",
    "Thumbnail",
    "cutout_png",
    "overlay_png",
    "preview",
    "thumbnail_png",
    "triptych",
]

#: Refuse to decode more pixels than this for one preview (after JPEG draft / TIFF overview choice).
MAX_PREVIEW_PIXELS = 100_000_000

# Pillow's global bomb check runs in Image.open, before an overview can be chosen; as in
# connectors.images, it is off and the limit above is enforced on what is actually decoded.
Image.MAX_IMAGE_PIXELS = None

ImageSource = bytes | IO[bytes]
Colour = tuple[int, int, int]

_CHECKER = ((204, 204, 204), (255, 255, 255))
_CHECKER_SQUARE = 8
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
# EXIF orientations 5..8 swap width and height.
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})


class Thumbnail(NamedTuple):
    """One PNG cell, or why there is none (``png`` None); ``note`` may also qualify a PNG."""

    png: bytes | None
    note: str | None = None


@dataclass(frozen=True)
class Preview:
    """A file decoded at thumbnail scale (RGB for images, L for masks), or why it could not be.

    ``full_size`` is the (width, height) of the file at full resolution, EXIF orientation
    applied, so an image and its mask can be checked for a mismatch without decoding either whole.
    """

    image: Image.Image | None
    full_size: tuple[int, int] | None = None
    reason: str | None = None

    @classmethod
    def unavailable(cls, reason: str) -> Preview:
        return cls(image=None, reason=reason)


class _Refused(Exception):
    pass


def _select_overview(image: Image.Image, max_side: int) -> None:
    """Seek a multi-page TIFF to its smallest page of the same picture with a long side >= max_side.

    Pages count as overviews only when their mode matches page 0 and their shape is page 0's
    scaled (within rounding), so the pages of an unrelated multi-page TIFF are never mixed up.
    """
    pages = getattr(image, "n_frames", 1)
    if image.format != "TIFF" or pages < 2:
        return
    base_width, base_height = image.size
    mode = image.mode
    best, best_pixels = 0, base_width * base_height
    for index in range(1, pages):
        image.seek(index)
        width, height = image.size
        same_shape = abs(width * base_height - height * base_width) <= 2 * max(base_width, base_height)
        if image.mode != mode or not same_shape or max(width, height) < max_side:
            continue
        if width * height < best_pixels:
            best, best_pixels = index, width * height
    image.seek(best)


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale -> L; values outside 0..255 are stretched from min..max."""
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    if image.mode not in ("I", "F"):
        return image
    low, high = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
    if image.mode == "I" and low >= 0 and high <= 255:
        return image.convert("L")
    span = float(high - low) or 1.0
    return image.point(lambda value: (value - low) * (255.0 / span)).convert("L")


def _to_rgb(image: Image.Image) -> Image.Image:
    image = _to_eight_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_grey(image: Image.Image) -> Image.Image:
    image = _to_eight_bit(image)
    return image if image.mode == "L" else image.convert("L")


def preview(
    source: ImageSource,
    max_side: int = 256,
    *,
    name: str = "image",
    mask: bool = False,
    max_pixels: int = MAX_PREVIEW_PIXELS,
) -> Preview:
    """Decode ``source`` (bytes or a seekable binary file) at thumbnail scale.

    The result fits in ``max_side`` x ``max_side``, with EXIF orientation applied; ``mask=True``
    gives greyscale (L), otherwise RGB with transparency flattened onto white. Problems come back
    as ``Preview.unavailable`` with a reason that starts with ``name``.
    """
    if max_side < 8:
        raise ValueError(f"max_side must be at least 8, got {max_side}")
    if isinstance(source, bytes | bytearray | memoryview):
        if not source:
            return Preview.unavailable(f"{name}: file is empty")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's TIFF tag and bomb warnings
            image: Image.Image = Image.open(source)
            orientation = image.getexif().get(0x0112, 1)
            full_width, full_height = image.size
            if orientation in _TRANSPOSED_ORIENTATIONS:
                full_width, full_height = full_height, full_width
            _select_overview(image, max_side)
            image.draft(None, (max_side, max_side))  # JPEG: decode at reduced scale
            if image.width * image.height > max_pixels:
                raise _Refused(
                    f"{name}: {image.width}x{image.height} px is too large to preview "
                    f"(limit {max_pixels} px; no overview or reduced decode available)"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_grey(image) if mask else _to_rgb(image)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    except _Refused as refused:
        return Preview.unavailable(str(refused))
    except UnidentifiedImageError:
        return Preview.unavailable(f"{name}: not a recognised image format")
    except _DECODE_ERRORS as exc:
        return Preview.unavailable(f"{name}: cannot decode ({type(exc).__name__}: {exc})")
    return Preview(image=image, full_size=(full_width, full_height))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _checkerboard(size: tuple[int, int]) -> Image.Image:
    width, height = size
    cells = Image.new("RGB", (width // _CHECKER_SQUARE + 1, height // _CHECKER_SQUARE + 1), _CHECKER[0])
    pixels = cells.load()
    assert pixels is not None
    for y in range(cells.height):
        for x in range(y % 2, cells.width, 2):
            pixels[x, y] = _CHECKER[1]
    scaled = cells.resize(
        (cells.width * _CHECKER_SQUARE, cells.height * _CHECKER_SQUARE), Image.Resampling.NEAREST
    )
    return scaled.crop((0, 0, width, height))


def _mismatch(image: Preview, mask: Preview) -> str | None:
    """A note when the mask's full size is not the image's: probably not this image's mask."""
    if image.full_size is None or mask.full_size is None or image.full_size == mask.full_size:
        return None
    (iw, ih), (mw, mh) = image.full_size, mask.full_size
    return f"mask is {mw}x{mh} px but the image is {iw}x{ih} px"


def _fitted_mask(image: Image.Image, mask: Image.Image) -> Image.Image:
    return mask if mask.size == image.size else mask.resize(image.size, Image.Resampling.BILINEAR)


def _overlay(image: Image.Image, mask: Image.Image, colour: Colour, alpha: float) -> Image.Image:
    """The image with the mask tinted in ``colour`` (weight ``alpha * p``) and its p=0.5 outline."""
    weight = mask.point(lambda value: round(value * alpha))
    tinted = Image.composite(Image.new("RGB", image.size, colour), image, weight)
    outline = mask.point(lambda value: 255 if value >= 128 else 0).filter(ImageFilter.FIND_EDGES)
    tinted.paste(colour, (0, 0, *image.size), outline)
    return tinted


def _cutout(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the mask as alpha, over a checkerboard so transparency is visible."""
    board = _checkerboard(image.size)
    board.paste(image, (0, 0), mask)
    return board


def triptych(
    image: Preview,
    mask: Preview,
    colour: Colour = (255, 0, 80),
    alpha: float = 0.45,
) -> tuple[Thumbnail, Thumbnail, Thumbnail]:
    """The three gallery cells (image, overlay, cut-out) from previews decoded once each.

    Without the image, the overlay cell shows the mask alone so it can still be judged; without
    the mask, overlay and cut-out carry the mask's reason. A mask whose full size differs from
    the image's is still drawn (resized), with a note saying so.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    first = Thumbnail(_png(image.image)) if image.image is not None else Thumbnail(None, image.reason)
    if mask.image is None:
        return first, Thumbnail(None, mask.reason), Thumbnail(None, mask.reason)
    if image.image is None:
        return first, Thumbnail(_png(mask.image), "mask alone (no image)"), Thumbnail(None, image.reason)
    fitted = _fitted_mask(image.image, mask.image)
    note = _mismatch(image, mask)
    return (
        first,
        Thumbnail(_png(_overlay(image.image, fitted, colour, alpha)), note),
        Thumbnail(_png(_cutout(image.image, fitted)), note),
    )


def thumbnail_png(
    image_bytes: ImageSource,
    max_side: int = 256,
    *,
    name: str = "image",
    max_pixels: int = MAX_PREVIEW_PIXELS,
) -> Thumbnail:
    """The image at most ``max_side`` px on its long side, as PNG (or why not)."""
    decoded = preview(image_bytes, max_side, name=name, max_pixels=max_pixels)
    return Thumbnail(_png(decoded.image)) if decoded.image is not None else Thumbnail(None, decoded.reason)


def _pair(
    image_bytes: ImageSource, mask_bytes: ImageSource, max_side: int, names: Sequence[str], max_pixels: int
) -> tuple[Preview, Preview]:
    image_name, mask_name = names
    return (
        preview(image_bytes, max_side, name=image_name, max_pixels=max_pixels),
        preview(mask_bytes, max_side, name=mask_name, mask=True, max_pixels=max_pixels),
    )


def overlay_png(
    image_bytes: ImageSource,
    mask_bytes: ImageSource,
    max_side: int = 256,
    colour: Colour = (255, 0, 80),
    alpha: float = 0.45,
    *,
    names: Sequence[str] = ("image", "mask"),
    max_pixels: int = MAX_PREVIEW_PIXELS,
) -> Thumbnail:
    """The image at thumbnail size with its mask (resized to match) tinted in ``colour``."""
    image, mask = _pair(image_bytes, mask_bytes, max_side, names, max_pixels)
    if image.image is None:
        return Thumbnail(None, image.reason)
    return triptych(image, mask, colour, alpha)[1]


def cutout_png(
    image_bytes: ImageSource,
    mask_bytes: ImageSource,
    max_side: int = 256,
    *,
    names: Sequence[str] = ("image", "mask"),
    max_pixels: int = MAX_PREVIEW_PIXELS,
) -> Thumbnail:
    """The image with its mask as alpha, composited over a grey-and-white checkerboard."""
    image, mask = _pair(image_bytes, mask_bytes, max_side, names, max_pixels)
    return triptych(image, mask)[2]

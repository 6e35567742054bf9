"""One encoded image to and from the network, exactly as the batch job does it.

Decode (libjpeg-turbo for plain JPEGs, Pillow for everything else), crop to a guiding box, resize
to the working size; and back: the cut-out (the mask at the image's own size is `birefnet_core.postprocessing`'s). The
job's stages (`jobs.segment.image_stages`), `birefnet predict` and the online service all go through
here, so one image, weights and resolution give the same mask bytes wherever they run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from birefnet_core.box_guidance import DEFAULT_BOX_MARGIN, Box, BoxGuide
from birefnet_core.cutout import composite_on_colour, make_cutout
from birefnet_core.preprocessing import (
    decode_jpeg_rgb,
    prepare_image,
    prepare_image_from_chw,
    to_rgb_uint8,
    working_size,
)
from birefnet_core.size import Size
from birefnet_core.variants import Variant
from connectors.images import ImageDecodeError, decode_image, encode_png, read_header

__all__ = ["PreparedInput", "cutout_png", "prepare_encoded"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedInput:
    """Working-size pixels of one image, its own size, and the box window they show (if any)."""

    pixels: np.ndarray  # h x w x 3 uint8 at working size
    size: Size
    guide: BoxGuide | None = None


def _prepared(
    image: np.ndarray | torch.Tensor,
    variant: Variant,
    size: Size | None,
    box: Box | None,
    margin: float,
) -> PreparedInput:
    """An H x W x 3 array (Pillow's decode) or a 3 x H x W tensor (torchvision's JPEG decode)."""
    chw = isinstance(image, torch.Tensor)
    original = Size(image.shape[1], image.shape[2]) if chw else Size(image.shape[0], image.shape[1])
    guide = BoxGuide.for_image(box, original, margin) if box is not None else None
    if isinstance(image, torch.Tensor):
        seen_chw = guide.crop(image, channels_first=True) if guide else image
        size_seen = working_size(variant, seen_chw.shape[1], seen_chw.shape[2], size)
        pixels = prepare_image_from_chw(seen_chw, size_seen)
    else:
        seen = guide.crop(image) if guide else image
        pixels = prepare_image(seen, working_size(variant, seen.shape[0], seen.shape[1], size))
    return PreparedInput(pixels, original, guide)


def prepare_encoded(
    data: bytes,
    uri: str,
    variant: Variant,
    size: Size | None,
    max_pixels: int,
    box: Box | str | None = None,
    box_margin: float = DEFAULT_BOX_MARGIN,
) -> PreparedInput:
    """Image bytes -> working-size pixels. Plain RGB/grey JPEGs (most photos) take the faster
    libjpeg-turbo path; everything else, and any JPEG it refuses, goes through Pillow. Raises
    ValueError naming `uri` for undecodable data, bombs and bad boxes."""
    if isinstance(box, str):
        box = Box.parse(box) if box.strip() else None
    if not data:
        raise ImageDecodeError(f"{uri}: file is empty")
    header = read_header(data, uri, max_pixels)
    if header.format == "JPEG" and header.mode in ("RGB", "L"):
        try:
            image = decode_jpeg_rgb(data)
        except (RuntimeError, ImportError):
            log.debug("%s: torchvision could not decode it; using Pillow", uri)
        else:
            return _prepared(image, variant, size, box, box_margin)
    rgb = to_rgb_uint8(decode_image(data, uri, max_pixels))
    return _prepared(rgb, variant, size, box, box_margin)


def cutout_png(
    data: bytes,
    uri: str,
    mask: np.ndarray,
    refine_foreground: bool = False,
    background: tuple[int, int, int] | None = None,
) -> bytes:
    """The cut-out of the image in `data` with the full-size 8-bit `mask` as alpha (RGBA PNG),
    or laid over a plain `background` colour (RGB PNG)."""
    rgb = to_rgb_uint8(decode_image(data, uri))
    if background is None:
        return encode_png(make_cutout(rgb, mask, refine_foreground))
    return encode_png(composite_on_colour(rgb, mask, background, refine_foreground))

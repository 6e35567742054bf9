"""The reference's training augmentations on an image and its mask, then the resize to the working size.

As BiRefNet's ``image_proc.preproc``, in its order: horizontal flip (p 0.5), centred random crop
keeping at least 90% of each side, rotation by up to 15 degrees (p 0.2, bicubic, both), colour
enhancement (brightness and contrast 0.5-1.5, saturation 0-2, sharpness 0-3; image only) and
pepper noise (0.15% of pixels set to black or white; image only). The reference trains with
flip, enhance, rotate and pepper (`DEFAULT_AUGMENTATIONS`). Randomness comes from the generator
passed in, so a caller decides whether epochs see fresh draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ["AUGMENTATIONS", "DEFAULT_AUGMENTATIONS", "augment_pair", "resize_pair"]

AUGMENTATIONS = ("flip", "crop", "rotate", "enhance", "pepper")
DEFAULT_AUGMENTATIONS = ("flip", "enhance", "rotate", "pepper")
_PEPPER_FRACTION = 0.0015
_MAX_ANGLE = 15


def _crop(image: Image.Image, mask: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    width, height = image.size
    border = int(min(width, height) * 0.1)
    if border < 1:
        return image, mask
    w = int(rng.integers(width - border, width))
    h = int(rng.integers(height - border, height))
    box = ((width - w) >> 1, (height - h) >> 1, (width + w) >> 1, (height + h) >> 1)
    return image.crop(box), mask.crop(box)


def _enhance(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhancer, low, high in (
        (ImageEnhance.Brightness, 5, 15),
        (ImageEnhance.Contrast, 5, 15),
        (ImageEnhance.Color, 0, 20),
        (ImageEnhance.Sharpness, 0, 30),
    ):
        image = enhancer(image).enhance(int(rng.integers(low, high + 1)) / 10.0)
    return image


def _pepper(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.array(image)
    count = int(_PEPPER_FRACTION * pixels.shape[0] * pixels.shape[1])
    ys = rng.integers(0, pixels.shape[0], count)
    xs = rng.integers(0, pixels.shape[1], count)
    pixels[ys, xs] = rng.integers(0, 2, count)[:, None] * 255
    return Image.fromarray(pixels)


def augment_pair(
    rgb: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    methods: Sequence[str] = DEFAULT_AUGMENTATIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment an H x W x 3 uint8 image and its H x W uint8 mask together; returns new arrays."""
    unknown = set(methods) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; choose from {list(AUGMENTATIONS)}")
    image, target = Image.fromarray(rgb), Image.fromarray(mask)
    if "flip" in methods and rng.random() > 0.5:
        image, target = (
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            target.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        )
    if "crop" in methods:
        image, target = _crop(image, target, rng)
    if "rotate" in methods and rng.random() > 0.8:
        angle = int(rng.integers(-_MAX_ANGLE, _MAX_ANGLE))
        image = image.rotate(angle, Image.Resampling.BICUBIC)
        target = target.rotate(angle, Image.Resampling.BICUBIC)
    if "enhance" in methods:
        image = _enhance(image, rng)
    if "pepper" in methods:
        image = _pepper(image, rng)
    return np.asarray(image), np.asarray(target)


def resize_pair(rgb: np.ndarray, mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Both to height x width, bilinear (the mask keeps soft edges, as the reference's Resize)."""
    if rgb.shape[:2] == (height, width) and mask.shape == (height, width):
        return rgb, mask
    size = (width, height)
    return (
        np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)),
        np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.BILINEAR)),
    )

"""Image -> network input, as the reference does it: RGB, bilinear resize, ImageNet normalisation.

The work is split so the expensive full-resolution part (`prepare_image`: colour conversion and
resize to the working size, in uint8) runs on CPU workers, and only a small uint8 array travels
to the accelerator, where `normalize_batch` turns it into the float input.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from .size import Size
from .variants import Variant

__all__ = [
    "DYNAMIC_MAX_SIDE",
    "decode_jpeg_rgb",
    "normalize_batch",
    "prepare_image",
    "prepare_image_from_chw",
    "to_rgb_uint8",
    "working_size",
]

#: Longest side the `dynamic` variant was trained at; larger inputs are scaled down to it.
DYNAMIC_MAX_SIDE = 2304
_HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _numeric_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        # uint16 and 32-bit integer images (PIL mode "I", which usually holds 16-bit data) are
        # scaled from 0..65535, rounded to nearest; integer data that fits in 0..255 is kept.
        top = 65535 if array.dtype == np.uint16 or array.max(initial=0) > 255 else 255
        clipped = np.clip(array, 0, top).astype(np.uint32)
        return ((clipped * 255 + top // 2) // top).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255).round().astype(np.uint8)
    raise TypeError(f"unsupported pixel type {array.dtype}")


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Any decoded image -> contiguous H x W x 3 uint8.

    Accepts PIL images of any mode (RGB, RGBA, L, LA, P, CMYK, YCbCr, I;16, I, F) without importing
    PIL, and NumPy arrays shaped H x W, H x W x 1/3/4 of uint8, uint16, other integers, bool or
    float in [0, 1]. Alpha is dropped as in the reference; 16-bit data is scaled, not clipped.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):
        if image.mode == "F":
            # PIL float images carry the 0..255 range of the 8-bit data they came from.
            image = np.asarray(image) / 255.0
        elif image.mode in _HIGH_BIT_MODES:
            image = np.asarray(image)
        else:
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(_numeric_to_uint8(array)[..., None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        array = _numeric_to_uint8(array[..., :3])
    else:
        raise ValueError(f"cannot read an image of shape {array.shape}; expected H x W or H x W x 1/3/4")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image has zero size {array.shape[:2]}")
    return np.ascontiguousarray(array)


def working_size(variant: Variant | None, height: int, width: int, size: Size | None = None) -> Size:
    """The size the network sees for an image of this size.

    `size` overrides the variant's; dynamic variants keep the native size rounded to a multiple
    of 32, scaled down first if its longest side exceeds DYNAMIC_MAX_SIDE.
    """
    fixed = size or (variant.size if variant else None)
    if fixed is not None:
        if fixed.height % 32 or fixed.width % 32:
            raise ValueError(
                f"working resolution {fixed.width}x{fixed.height} must be a multiple of 32 on both sides"
            )
        return Size(*fixed)
    scale = min(1.0, DYNAMIC_MAX_SIDE / max(height, width))
    return Size(max(32, int(height * scale / 32 + 0.5) * 32), max(32, int(width * scale / 32 + 0.5) * 32))


def prepare_image(rgb: np.ndarray, size: Size) -> np.ndarray:
    """Resize an H x W x 3 uint8 image to `size`, bilinear with antialiasing like PIL."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    # Decoders hand out read-only buffers; resizing never writes, but torch wants a writable one.
    return prepare_image_from_chw(
        torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()).permute(2, 0, 1), size
    )


def decode_jpeg_rgb(data: bytes) -> torch.Tensor:
    """JPEG bytes -> 3 x H x W uint8 RGB, EXIF orientation applied (libjpeg-turbo via torchvision).

    Decodes straight into the tensor the resize works on: about 5 ms less per 3-megapixel photo
    than Pillow plus a NumPy copy. Callers check the header (size limit, colour mode) first and
    fall back to Pillow on RuntimeError or ImportError: torchvision deprecated its image codecs
    in 0.29, so a later release may not have them.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)


def prepare_image_from_chw(image: torch.Tensor, size: Size) -> np.ndarray:
    """`prepare_image` for a 3 x H x W uint8 tensor (as decoders return): `size` x 3 uint8 array."""
    if tuple(image.shape[1:]) != tuple(size):
        image = TF.resize(image, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return image.permute(1, 2, 0).contiguous().numpy()


def normalize_batch(
    pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """B x H x W x 3 uint8 -> B x 3 x H x W float, scaled to [0, 1] and normalised.

    One converting copy into NCHW, then an in-place multiply-add ((x/255 - m)/s == x * a + b).
    """
    scale, shift = _normalization_constants(tuple(mean), tuple(std), pixels.device)
    x = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    return x.mul_(scale).add_(shift).to(dtype)


@lru_cache(maxsize=16)
def _normalization_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) of x * a + b on `device`, made once: building them per batch would be a blocking
    host-to-device copy in front of every accelerator batch."""
    with torch.inference_mode(False):
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
        return scale.to(device), shift.to(device)

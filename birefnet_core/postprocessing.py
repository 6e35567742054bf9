"""Network output -> masks at the original image size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

__all__ = ["mask_at_size", "probabilities_to_uint8", "resize_probabilities"]


def resize_probabilities(probabilities: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """h x w float probabilities -> `size` (height, width), bilinear (antialiased when shrinking)."""
    tensor = torch.as_tensor(probabilities, dtype=torch.float32)
    if tuple(tensor.shape) == tuple(size):
        return tensor.numpy()
    shrinking = size[0] < tensor.shape[0] or size[1] < tensor.shape[1]
    out = F.interpolate(
        tensor[None, None], size=size, mode="bilinear", align_corners=False, antialias=shrinking
    )
    return out[0, 0].clamp_(0.0, 1.0).numpy()


def probabilities_to_uint8(probabilities: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> 0..255 uint8, rounded to nearest."""
    return np.clip(np.rint(probabilities * 255.0), 0, 255).astype(np.uint8)


def mask_at_size(probabilities: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Working-size probabilities -> 8-bit mask of `size` (height, width), the fast path for jobs.

    Quantises first and resizes the uint8 map (as the reference does with PIL), which is several
    times cheaper than resizing floats at full resolution; differs from `resize_probabilities`
    by at most one grey level.
    """
    small = torch.from_numpy(probabilities_to_uint8(np.asarray(probabilities, dtype=np.float32)))
    if tuple(small.shape) == tuple(size):
        return small.numpy()
    resized = TF.resize(small[None], list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return resized[0].numpy()

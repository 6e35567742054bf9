"""Network output -> masks at the original image size."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

__all__ = ["probabilities_to_uint8", "resize_mask", "resize_probabilities"]


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
    scaled = np.multiply(probabilities, 255.0, dtype=np.float32)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """8-bit h x w mask -> `size` (height, width), bilinear (antialiased when shrinking).

    Resizing the quantised map (as the reference does with PIL) is several times cheaper than
    resizing floats at full resolution, and differs from `resize_probabilities` by at most one
    grey level. Enlarging, the usual case, uses OpenCV's fixed-point bilinear kernel: same pixel
    centres as PIL and torch, a third of torch's time (2048x1536: about 3 ms against 9).
    """
    if tuple(mask.shape) == tuple(size):
        return mask
    shrinking = size[0] < mask.shape[0] or size[1] < mask.shape[1]
    if not shrinking:
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    resized = TF.resize(
        torch.from_numpy(mask)[None],
        list(size),
        interpolation=TF.InterpolationMode.BILINEAR,
        antialias=shrinking,
    )
    return resized[0].numpy()

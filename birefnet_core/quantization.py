"""Probabilities <-> 8-bit levels: the one rounding that masks, histograms and transfers share.

Masks are stored and moved as uint8, so every place that turns probabilities into bytes must
round the same way, or a mask written by one path would differ from its twin by a grey level.
Torch is not imported here (tensors are quantised through their own methods), which keeps the
module usable by the light, torch-free workers (quality, cut-outs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["dequantize_probabilities", "quantize_probabilities"]

Probabilities = TypeVar("Probabilities", np.ndarray, "torch.Tensor")


def quantize_probabilities(probabilities: Probabilities, threshold: float | None = None) -> Probabilities:
    """[0, 1] probabilities -> uint8: the nearest of 256 levels, or 0 / 255 split at `threshold`.

    Out-of-range values clip and ties round to even. Arrays are scaled in float32 (float64 ones
    in float64); a torch tensor is quantised on its own device, so an accelerator sends back a
    quarter of the bytes.
    """
    if not isinstance(probabilities, np.ndarray):
        if threshold is not None:
            return (probabilities >= threshold).byte().mul_(255)
        return probabilities.mul(255.0).clamp_(0.0, 255.0).round_().byte()
    if threshold is not None:
        return np.where(probabilities >= threshold, 255, 0).astype(np.uint8)
    scaled = np.multiply(probabilities, 255.0, dtype=np.result_type(probabilities.dtype, np.float32))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def dequantize_probabilities(levels: np.ndarray) -> np.ndarray:
    """0..255 uint8 levels -> float32 probabilities in [0, 1], within 1/510 of what was quantised."""
    return levels.astype(np.float32) / 255.0

"""Inputs for deformable-convolution kernel comparisons: large offsets push many samples outside
the image, exercising the zero border, and the modulation spans (0, 2) as in DCNv2."""

from __future__ import annotations

import torch


def deform_case(kernel: int, batch: int, h: int = 19, w: int = 27) -> tuple[torch.Tensor, ...]:
    """(x, offset, mask, weight) for `kernel` x `kernel` taps, seeded by kernel and batch."""
    gen = torch.Generator().manual_seed(kernel * 10 + batch)
    x = torch.randn(batch, 16, h, w, generator=gen)
    offset = 4.0 * torch.randn(batch, 2 * kernel * kernel, h, w, generator=gen)
    mask = 2.0 * torch.rand(batch, kernel * kernel, h, w, generator=gen)
    weight = torch.randn(32, 16, kernel, kernel, generator=gen) / kernel
    return x, offset, mask, weight

"""Image-to-patch rearrangement that feeds raw pixels into each decoder stage."""

from __future__ import annotations

import torch

__all__ = ["patchify"]


def patchify(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Cut `x` into a grid of `ref`-sized patches stacked on the channel axis.

    Channel order is c * gh * gw + i * gw + j for the patch at grid row i, column j
    (einops: ``b c (gh h) (gw w) -> b (c gh gw) h w``), as the checkpoints were trained with.
    """
    batch, channels, height, width = x.shape
    h, w = ref.shape[-2:]
    gh, gw = height // h, width // w
    x = x.view(batch, channels, gh, h, gw, w).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(batch, channels * gh * gw, h, w)

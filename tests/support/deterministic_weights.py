"""Deterministic weight fill, model and input of the numerical-parity fixture (test data generator).

Re-implemented from the algorithm described with the fixture: each floating tensor is drawn
from a generator seeded with the CRC32 of its key, scaled by the kind of tensor it is.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F

from birefnet_core import BiRefNet, create_model
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD


def _fill(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("running_var"):
        return torch.rand(shape, generator=gen) * 0.5 + 0.75
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=gen) * 0.1
    if key.endswith("relative_position_bias_table"):
        return torch.randn(shape, generator=gen) * 0.02
    if len(shape) >= 2:
        return torch.randn(shape, generator=gen) / math.sqrt(max(1, math.prod(shape[1:])))
    if key.endswith("weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


def det_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        key: (_fill(key, tuple(v.shape)).to(v.dtype) if torch.is_floating_point(v) else v.clone())
        for key, v in sorted(state_dict.items())
    }


def det_input(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand((batch, 3, max(1, h // 16), max(1, w // 16)), generator=gen)
    img = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    img = img + 0.05 * torch.randn((batch, 3, h, w), generator=gen)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (img.clamp(0, 1) - mean) / std


def det_model(backbone: str = "swin_v1_t") -> BiRefNet:
    """A BiRefNet with the fixture's deterministic weights: same numbers on every machine, no download."""
    model = create_model(backbone)
    model.load_state_dict(det_weights(model.state_dict()), strict=True)
    return model

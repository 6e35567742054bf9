"""BiRefNet model and image math: network, weights, pre/post-processing, prediction.

Names are imported lazily, so workers that only need light modules (metrics, quality, tiling
maths) do not pay for importing torch, torchvision and timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import BACKBONES, BiRefNet, create_model
    from .size import Size
    from .variants import VARIANTS, Variant, get_variant
    from .weights import CheckpointMismatchError, WeightsInfo, WeightsNotFoundError, load_model

_EXPORTS = {
    "BACKBONES": ".model",
    "BiRefNet": ".model",
    "create_model": ".model",
    "Size": ".size",
    "VARIANTS": ".variants",
    "Variant": ".variants",
    "get_variant": ".variants",
    "CheckpointMismatchError": ".weights",
    "WeightsInfo": ".weights",
    "WeightsNotFoundError": ".weights",
    "load_model": ".weights",
}

__all__ = [
    "BACKBONES",
    "VARIANTS",
    "BiRefNet",
    "CheckpointMismatchError",
    "Size",
    "Variant",
    "WeightsInfo",
    "WeightsNotFoundError",
    "create_model",
    "get_variant",
    "load_model",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)

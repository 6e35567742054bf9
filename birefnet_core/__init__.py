"""BiRefNet model and image math: network, weights, pre/post-processing, prediction."""

from .model import BACKBONES, BiRefNet, create_model
from .variants import VARIANTS, Variant, get_variant
from .weights import CheckpointMismatchError, WeightsInfo, WeightsNotFoundError, load_model

__all__ = [
    "BACKBONES",
    "VARIANTS",
    "BiRefNet",
    "CheckpointMismatchError",
    "Variant",
    "WeightsInfo",
    "WeightsNotFoundError",
    "create_model",
    "get_variant",
    "load_model",
]

"""BiRefNet network definition and its backbones."""

from .birefnet import BACKBONES, BiRefNet, checkpoint_filter_fn, create_model

__all__ = ["BACKBONES", "BiRefNet", "checkpoint_filter_fn", "create_model"]

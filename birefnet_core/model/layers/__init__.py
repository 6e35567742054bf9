"""Building blocks shared by BiRefNet's decoder, one concept per file."""

from .aspp import ASPPDeformable
from .decoder_blocks import BasicDecBlk, SimpleConvs
from .deform_conv import DeformableConv2d, deform_conv2d_torch
from .patches import patchify

__all__ = [
    "ASPPDeformable",
    "BasicDecBlk",
    "DeformableConv2d",
    "SimpleConvs",
    "deform_conv2d_torch",
    "patchify",
]

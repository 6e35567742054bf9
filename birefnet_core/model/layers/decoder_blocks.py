"""Convolution blocks of the BiRefNet decoder (names follow the released checkpoints)."""

from __future__ import annotations

import torch
from torch import nn

from .aspp import ASPPDeformable

__all__ = ["BasicDecBlk", "SimpleConvs"]


class BasicDecBlk(nn.Module):
    """conv3x3 -> BN -> ReLU -> deformable ASPP -> conv3x3 -> BN (no final activation)."""

    def __init__(
        self, in_channels: int, out_channels: int, inter_channels: int = 64, aspp_channels: int = 256
    ) -> None:
        super().__init__()
        # Registration order mirrors the checkpoints' key order.
        self.conv_in = nn.Conv2d(in_channels, inter_channels, 3, padding=1)
        self.relu_in = nn.ReLU(inplace=True)
        self.dec_att = ASPPDeformable(inter_channels, aspp_channels)
        self.conv_out = nn.Conv2d(inter_channels, out_channels, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(inter_channels)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_in(self.bn_in(self.conv_in(x)))
        x = self.dec_att(x)
        return self.bn_out(self.conv_out(x))


class SimpleConvs(nn.Module):
    """Two plain 3x3 convolutions that embed raw image patches for the decoder ('ipt' blocks)."""

    def __init__(self, in_channels: int, out_channels: int, inter_channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inter_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(inter_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))

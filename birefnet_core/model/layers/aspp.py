"""ASPP with deformable branches: the attention block inside every BiRefNet decoder block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform_conv import DeformableConv2d

__all__ = ["ASPPDeformable"]


class _DeformableBranch(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    """Five parallel branches (deformable 1x1, 1x1, 3x3, 7x7 and global pooling) fused by a 1x1 conv."""

    def __init__(
        self,
        in_channels: int,
        branch_channels: int = 256,
        kernel_sizes: tuple[int, ...] = (1, 3, 7),
    ) -> None:
        super().__init__()
        self.aspp1 = _DeformableBranch(in_channels, branch_channels, 1)
        self.aspp_deforms = nn.ModuleList(
            _DeformableBranch(in_channels, branch_channels, k) for k in kernel_sizes
        )
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, branch_channels, 1, bias=False),
            nn.BatchNorm2d(branch_channels),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(branch_channels * (2 + len(kernel_sizes)), in_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv1(cat[branches, upsampled pooled branch]) with the pooled branch as a bias.

        The pooled branch is one vector per image, so its upsampled map is that vector at every
        pixel and its share of the 1x1 `conv1` is a per-channel constant: adding it after the
        convolution of the spatial branches is exact and spares building, concatenating and
        convolving a full-size map of `branch_channels` constant channels.
        """
        branches = torch.cat([self.aspp1(x), *(branch(x) for branch in self.aspp_deforms)], dim=1)
        pooled = self.global_avg_pool(x)
        spatial = branches.shape[1]
        weight = self.conv1.weight
        x = F.conv2d(branches, weight[:, :spatial]) + F.conv2d(pooled, weight[:, spatial:])
        return self.dropout(self.relu(self.bn1(x)))

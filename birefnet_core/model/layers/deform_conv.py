"""Modulated deformable convolution (DCNv2) with two interchangeable kernels.

torchvision's `deform_conv2d` is the reference kernel, but it has no bfloat16 CPU implementation
and does not export. `deform_conv2d_torch` computes the same thing from gathers and matmuls only,
so it runs in any dtype on any device; sampling coordinates are always computed in float32
because bf16 cannot even represent pixel positions above 256 exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d as tv_deform_conv2d

__all__ = ["DeformableConv2d", "deform_conv2d_torch", "select_deform_kernel"]


def deform_conv2d_torch(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """Stride-1, dilation-1, single-group modulated deformable convolution.

    Same contract as `torchvision.ops.deform_conv2d` (offset channels are (dy, dx) pairs per
    kernel tap in row-major order; samples outside the image read zero). The work is done one
    kernel tap at a time, so memory stays at a few feature maps instead of an im2col buffer of
    k*k maps: each tap gathers the four bilinear corners from a channels-last copy of `x`, mixes
    them with the modulation mask and accumulates one (C -> O) matmul.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    positions = out_h * out_w
    dtype = x.dtype

    # Zero border of one pixel so that every out-of-range corner reads a real zero.
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(batch, -1, channels)
    padded_w = width + 2
    batch_base = (torch.arange(batch, device=x.device) * (height + 2) * padded_w).view(batch, 1)

    base_y = torch.arange(out_h, device=x.device, dtype=torch.float32).view(out_h, 1) - padding
    base_x = torch.arange(out_w, device=x.device, dtype=torch.float32).view(1, out_w) - padding
    offset = offset.float().view(batch, kh * kw, 2, out_h, out_w)
    mask = mask.float().view(batch, kh * kw, out_h, out_w)
    flat = padded.reshape(-1, channels)

    out = x.new_zeros(batch, positions, out_channels)
    for tap in range(kh * kw):
        ky, kx = divmod(tap, kw)
        y = base_y + ky + offset[:, tap, 0]
        xx = base_x + kx + offset[:, tap, 1]
        inside = (y > -1) & (y < height) & (xx > -1) & (xx < width)
        y = y.clamp(-1, height)
        xx = xx.clamp(-1, width)
        y0 = y.floor()
        x0 = xx.floor()
        wy1 = y - y0
        wx1 = xx - x0
        wy0 = 1 - wy1
        wx0 = 1 - wx1
        modulation = mask[:, tap] * inside
        # +1 moves into the padded frame; the far corner of a clamped coordinate stays in range.
        iy0 = (y0.long() + 1).clamp(0, height + 1)
        ix0 = (x0.long() + 1).clamp(0, width + 1)
        iy1 = (iy0 + 1).clamp(max=height + 1)
        ix1 = (ix0 + 1).clamp(max=width + 1)
        sampled = None
        for iy, ix, wgt in (
            (iy0, ix0, wy0 * wx0),
            (iy0, ix1, wy0 * wx1),
            (iy1, ix0, wy1 * wx0),
            (iy1, ix1, wy1 * wx1),
        ):
            index = (iy * padded_w + ix).view(batch, positions) + batch_base
            corner = flat.index_select(0, index.view(-1)).view(batch, positions, channels)
            term = corner * (wgt * modulation).view(batch, positions, 1).to(dtype)
            sampled = term if sampled is None else sampled + term
        out = out + sampled @ weight[:, :, ky, kx].t().to(dtype)
    return out.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2)


def select_deform_kernel(x: torch.Tensor, force_torch: bool = False) -> str:
    """Pick 'torchvision' where its kernel runs this dtype on this device, else 'torch'."""
    if force_torch or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return "torch"
    if x.dtype == torch.float32 or (x.is_cuda and x.dtype == torch.float16):
        return "torchvision"
    return "torch"


class DeformableConv2d(nn.Module):
    """DCNv2 block: offsets and a 2*sigmoid modulation predicted from the input itself.

    Submodule names (`offset_conv`, `modulator_conv`, `regular_conv`) are those of the released
    BiRefNet checkpoints.
    """

    force_torch_kernel: bool = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        self.padding = padding
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=padding, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, padding=padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        weight = self.regular_conv.weight
        if select_deform_kernel(x, self.force_torch_kernel) == "torch":
            return deform_conv2d_torch(x, offset, weight, mask, self.padding)
        with torch.autocast(x.device.type, enabled=False):
            dtype = x.dtype
            return tv_deform_conv2d(
                x, offset.to(dtype), weight.to(dtype), padding=self.padding, mask=mask.to(dtype)
            )

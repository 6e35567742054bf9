"""Modulated deformable convolution (DCNv2) with two interchangeable kernels.

torchvision's `deform_conv2d` is the reference kernel, but it has no bfloat16 CPU implementation
and does not export. `deform_conv2d_torch` computes the same thing from `grid_sample` and one matmul,
so it runs in any dtype on any device (and is faster on CPU); sampling is always done in float32
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
    chunk_bytes: int = 256 << 20,
) -> torch.Tensor:
    """Stride-1, dilation-1, single-group modulated deformable convolution.

    Same contract as `torchvision.ops.deform_conv2d` (offset channels are (dy, dx) pairs per
    kernel tap in row-major order; samples outside the image read zero). Built as im2col + GEMM:
    `grid_sample` gathers every tap's bilinear sample into a C*k*k x positions column matrix
    (zero padding gives the out-of-image behaviour), the modulation mask scales it, and one matmul
    with the flattened weight finishes the job. Positions are processed in chunks so the column
    buffer stays under `chunk_bytes`. Sampling runs in float32; the matmul in `x.dtype`.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    positions = out_h * out_w
    device = x.device

    tap_y, tap_x = torch.meshgrid(
        torch.arange(kh, device=device, dtype=torch.float32),
        torch.arange(kw, device=device, dtype=torch.float32),
        indexing="ij",
    )
    base_y = torch.arange(out_h, device=device, dtype=torch.float32).view(1, 1, out_h, 1) - padding
    base_x = torch.arange(out_w, device=device, dtype=torch.float32).view(1, 1, 1, out_w) - padding
    offset = offset.float().view(batch, taps, 2, out_h, out_w)
    # Pixel -> grid_sample's normalised coordinates (align_corners=False: pixel i is at (2i+1)/n - 1).
    y = (base_y + tap_y.reshape(1, taps, 1, 1) + offset[:, :, 0]) * (2.0 / height) + (1.0 / height - 1.0)
    xx = (base_x + tap_x.reshape(1, taps, 1, 1) + offset[:, :, 1]) * (2.0 / width) + (1.0 / width - 1.0)
    grid = torch.stack((xx, y), dim=-1).view(batch, taps, positions, 2)
    modulation = mask.float().reshape(batch, 1, taps, positions)
    source = x.float()
    weight_matrix = weight.reshape(out_channels, channels * taps).to(x.dtype)

    step = max(1, chunk_bytes // (4 * channels * taps * batch))
    if step >= positions:
        return _modulated_columns_product(source, grid, modulation, weight_matrix, x.dtype).view(
            batch, out_channels, out_h, out_w
        )
    out = x.new_empty(batch, out_channels, positions)
    for start in range(0, positions, step):
        window = slice(start, start + step)
        out[..., window] = _modulated_columns_product(
            source, grid[:, :, window], modulation[..., window], weight_matrix, x.dtype
        )
    return out.view(batch, out_channels, out_h, out_w)


def _modulated_columns_product(
    source: torch.Tensor,
    grid: torch.Tensor,
    modulation: torch.Tensor,
    weight_matrix: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """weight_matrix @ (bilinear samples of `source` at `grid`, scaled by `modulation`)."""
    batch, channels = source.shape[:2]
    columns = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    columns = columns.mul_(modulation).to(dtype).reshape(batch, channels * grid.shape[1], -1)
    return torch.matmul(weight_matrix, columns)


def select_deform_kernel(x: torch.Tensor, preference: str = "auto") -> str:
    """'torchvision' on CUDA in float32/float16, where its kernel is native; 'torch' elsewhere.

    On CPU the im2col kernel is also the faster one (BiRefNet-lite at 1024x1024 on 2 AVX2 cores:
    12.6 s per image against 16.6 s with torchvision's kernel; 2.4 s against 4.1 s at 512x512).
    """
    if preference != "auto":
        return preference
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return "torch"
    if x.is_cuda and x.dtype in (torch.float32, torch.float16):
        return "torchvision"
    return "torch"


class DeformableConv2d(nn.Module):
    """DCNv2 block: offsets and a 2*sigmoid modulation predicted from the input itself.

    Submodule names (`offset_conv`, `modulator_conv`, `regular_conv`) are those of the released
    BiRefNet checkpoints.
    """

    #: "auto", "torch" or "torchvision"; a class attribute so a whole model can be switched.
    kernel: str = "auto"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        self.padding = padding
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=padding, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, padding=padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)

    def offsets_and_modulation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both predictions from one convolution over `x` (the two convolutions' filters stacked),
        which reads the input once instead of twice; exact, since each output channel is its own
        filter."""
        taps = self.modulator_conv.out_channels
        weight = torch.cat((self.offset_conv.weight, self.modulator_conv.weight))
        bias = torch.cat((self.offset_conv.bias, self.modulator_conv.bias))
        both = F.conv2d(x, weight, bias, padding=self.padding)
        offset, modulator = both.split((2 * taps, taps), dim=1)
        return offset, 2.0 * torch.sigmoid(modulator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_modulation(x)
        weight = self.regular_conv.weight
        if select_deform_kernel(x, self.kernel) == "torch":
            return deform_conv2d_torch(x, offset, weight, mask, self.padding)
        with torch.autocast(x.device.type, enabled=False):
            dtype = x.dtype
            return tv_deform_conv2d(
                x, offset.to(dtype), weight.to(dtype), padding=self.padding, mask=mask.to(dtype)
            )

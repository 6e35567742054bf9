"""Swin Transformer v1 backbone, detection flavour (pads instead of fixing the input size).

Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021.
BiRefNet uses the object-detection variant of the network: any input size works because feature
maps are zero-padded to whole windows, and the four stage outputs are layer-normalised and
returned as NCHW maps. Parameter names match the released BiRefNet checkpoints (prefix `bb.`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

__all__ = [
    "SWIN_CONFIGS",
    "SwinConfig",
    "SwinTransformer",
    "create_swin",
    "shifted_window_mask",
    "window_token_order",
    "windowed_attention",
]

T = TypeVar("T")

SHIFT_MASK_VALUE = -100.0
#: Attention biases kept per block: BiRefNet runs the backbone at two scales per forward, and a
#: tiled scene adds its context pass.
BIAS_CACHE_SHAPES = 4


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int

    @property
    def channels(self) -> tuple[int, int, int, int]:
        c = self.embed_dim
        return (c, 2 * c, 4 * c, 8 * c)


SWIN_CONFIGS: dict[str, SwinConfig] = {
    "swin_v1_t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_v1_s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_v1_b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_v1_l": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
    # Not a release: the narrow backbone of the demonstration model trained on generated data.
    "swin_v1_demo": SwinConfig(24, (2, 2, 2, 2), (1, 2, 4, 8), 7),
}
#: Stochastic depth of the released training recipe, rising linearly to this over the blocks.
DROP_PATH_RATE = 0.2


def ceil_div(n: int, d: int) -> int:
    """ceil(n / d) for n >= 0, without negative floor division, which an exported graph computes
    as truncating integer division."""
    return (n + d - 1) // d


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window * window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def relative_position_index(window: int) -> torch.Tensor:
    """Standard Swin index into the (2w-1)^2 relative-bias table for every token pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def cached_per_shape(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: `build(shape..., device)` made once per argument tuple (the last `maxsize` kept)
    and shared from then on.

    What it returns depends on the arguments alone (shapes, never weights). It is built outside
    inference mode, so a value first made during inference also serves training, and built
    afresh while torch.compile traces, which cannot trace through the cache.
    """

    def decorate(build: Callable[..., T]) -> Callable[..., T]:
        @lru_cache(maxsize=maxsize)
        def cached(*args: Any) -> T:
            with torch.inference_mode(False):
                return build(*args)

        @wraps(build)
        def get(*args: Any) -> T:
            return build(*args) if torch.compiler.is_compiling() else cached(*args)

        return get

    return decorate


@cached_per_shape(maxsize=32)
def shifted_window_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask (nW, 1, N, N) that keeps shifted windows from attending across the roll seam;
    shared by every block, batch and forward of that padded shape."""

    def bands(length: int) -> torch.Tensor:
        # 0 before the last window, 1 in it up to the shift, 2 in the last `shift` positions.
        position = torch.arange(length, device=device)
        return (position >= length - window).long() + (position >= length - shift).long()

    regions = 3 * bands(hp).view(1, hp, 1, 1) + bands(wp).view(1, 1, wp, 1)
    labels = window_partition(regions, window).squeeze(-1)
    different = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE).unsqueeze(1)


@cached_per_shape(maxsize=64)
def window_token_order(
    h: int, w: int, window: int, shift: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pair that replaces a block's pad, roll, window partition, reverse, roll back and crop.

    `gather` (nW * N,) names, for every token slot of the shifted, zero-padded window layout, the
    real token it holds, or h * w for padding (a zero token appended after the real ones).
    `scatter` (h * w,) names, for every real token, its slot in that layout.
    """
    hp, wp = ceil_div(h, window) * window, ceil_div(w, window) * window
    rows = torch.arange(hp, device=device).view(-1, 1)
    cols = torch.arange(wp, device=device).view(1, -1)
    source = torch.where((rows < h) & (cols < w), rows * w + cols, h * w)
    if shift:
        source = torch.roll(source, shifts=(-shift, -shift), dims=(0, 1))
    gather = window_partition(source.view(1, hp, wp, 1), window).reshape(-1)
    slots = torch.arange(gather.numel(), device=device)
    # Every padding slot writes to the extra last entry, which is then dropped.
    scatter = torch.zeros(h * w + 1, dtype=torch.long, device=device).scatter_(0, gather, slots)[: h * w]
    return gather, scatter


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over many small windows.

    On CPU in reduced precision two plain matmuls around a softmax run about twice as fast as the
    fused SDPA kernel for Swin's 49- or 144-token windows (bf16 on 2 AVX512-BF16 cores: 5.9 ms
    against 11.5 ms for 9 windows x 24 heads, 20 ms against 40 ms for 121 x 6); elsewhere, and in
    float32, SDPA is as fast or faster. While exporting, the plain form is traced: its output
    strides do not depend on which SDPA kernel the tracer assumes.
    """
    fused = q.device.type != "cpu" or q.dtype == torch.float32
    if fused and not torch.compiler.is_exporting():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)).add_(bias)
    return torch.matmul(scores.softmax(-1), v)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with Swin's relative-position bias.

    The projections are applied by the block (`SwinBlock`), which runs them on real tokens only;
    `attend` is the part in between.
    """

    relative_position_index: torch.Tensor  # a buffer

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) relative-position bias."""
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def attention_bias(
        self, shift_mask: torch.Tensor | None, dtype: torch.dtype, shape_key: tuple
    ) -> torch.Tensor:
        """Position bias (1, heads, N, N), or with a shift mask (1, nW * heads, N, N), in `dtype`.

        Without gradients (inference) it is built once per shape, dtype and weight version and
        reused by every later forward; with gradients it is rebuilt so that the table trains.
        """
        reusable = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if reusable:
            table = self.relative_position_bias_table
            version = None if table.is_inference() else table._version
            key = (shape_key, dtype, table.device, table.data_ptr(), version)
            if key in self._bias_cache:
                return self._bias_cache[key]
        bias = self.position_bias().to(dtype)
        if shift_mask is None:
            bias = bias.unsqueeze(0).contiguous()
        else:
            n = bias.shape[-1]
            bias = (shift_mask.to(dtype) + bias).contiguous().view(1, -1, n, n)
        if reusable:
            if len(self._bias_cache) >= BIAS_CACHE_SHAPES:
                self._bias_cache.pop(next(iter(self._bias_cache)))
            self._bias_cache[key] = bias
        return bias

    def attend(self, qkv: torch.Tensor, shift_mask: torch.Tensor | None, shape_key: tuple) -> torch.Tensor:
        """(B * nW, N, 3C) projected windows -> (B * nW, N, C) attended, before the output projection.

        With a mask, the windows of one image are folded into the head axis (B, nW * heads, N, d)
        so that the (nW * heads, N, N) bias broadcasts over the batch instead of being copied
        once per image.
        """
        windows, n, c3 = qkv.shape
        heads, head_dim = self.num_heads, c3 // (3 * self.num_heads)
        q, k, v = qkv.view(windows, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.attention_bias(shift_mask, q.dtype, shape_key)
        if shift_mask is None:
            x = windowed_attention(q, k, v, bias)
        else:
            folded = (windows // shift_mask.shape[0], -1, n, head_dim)
            x = windowed_attention(q.reshape(folded), k.reshape(folded), v.reshape(folded), bias).view(
                windows, heads, n, head_dim
            )
        return x.transpose(1, 2).reshape(windows, n, heads * head_dim)


class SwinBlock(nn.Module):
    """Swin block, computed without ever materialising the padded, shifted feature map.

    The released network pads the normalised tokens with zeros to whole windows, rolls them,
    partitions them, projects q/k/v for every slot, attends, projects every slot out and undoes
    it all. Padding slots project to exactly the qkv bias and their outputs are cropped, so here
    q/k/v are projected for the real tokens plus one appended zero token, one gather builds the
    window layout, and after attention one gather brings each real token back before the output
    projection: the same numbers, with no projection FLOPs spent on padding (a 16x16 last stage
    pads to 24x24 with 12-token windows) and two index copies instead of six layout copies.
    """

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()  # training only

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        gather, scatter = window_token_order(h, w, self.window, self.shift, x.device)
        tokens = F.pad(self.norm1(x), (0, 0, 0, 1))
        qkv = self.attn.qkv(tokens).index_select(1, gather)
        windows = qkv.view(-1, self.window * self.window, 3 * c)
        attended = self.attn.attend(windows, mask if self.shift else None, (h, w, self.shift))
        x = x + self.drop_path(self.attn.proj(attended.view(b, -1, c).index_select(1, scatter)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> channels, halving resolution and doubling width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int], merged: tuple[int, int]) -> torch.Tensor:
        """(B, h * w, C) tokens -> (B, ho * wo, 2C), `merged` = (ceil(h / 2), ceil(w / 2)).

        The 2x2 neighbours are concatenated in the released order, (0, 0), (1, 0), (0, 1), (1, 1)
        as (row, column) offsets, by one reshape of the zero-padded map.
        """
        (h, w), (ho, wo) = size, merged
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, 2 * wo - w, 0, 2 * ho - h))
        x = x.view(b, ho, 2, wo, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, ho * wo, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, window: int, downsample: bool, drop_paths: list[float]
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else self.shift, rate)
            for i, rate in enumerate(drop_paths)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], merged: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (stage output at `size`, input of the next stage at `merged`)."""
        h, w = size
        hp = ceil_div(h, self.window) * self.window
        wp = ceil_div(w, self.window) * self.window
        mask = shifted_window_mask(hp, wp, self.window, self.shift, x.device)
        for block in self.blocks:
            x = block(x, h, w, mask)
        following = self.downsample(x, size, merged) if self.downsample is not None else x
        return x, following


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, embed_dim, patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch or w % self.patch:
            x = F.pad(x, (0, -w % self.patch, 0, -h % self.patch))
        x = self.proj(x)
        b, c, hh, ww = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(b, c, hh, ww)


class SwinTransformer(nn.Module):
    """Returns four NCHW feature maps at strides 4, 8, 16 and 32."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.config = config
        self.channels = config.channels
        self.patch_embed = PatchEmbed(config.embed_dim)
        rates = torch.linspace(0, DROP_PATH_RATE, sum(config.depths)).tolist()
        starts = [sum(config.depths[:i]) for i in range(4)]
        self.layers = nn.ModuleList(
            SwinStage(dim, heads, config.window_size, i < 3, rates[start : start + depth])
            for i, (dim, depth, heads, start) in enumerate(
                zip(self.channels, config.depths, config.num_heads, starts, strict=True)
            )
        )
        for i, dim in enumerate(self.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        b, _, h, w = x.shape
        # Stage i is ceil(h / 2^i) tall (nested ceilings of halves are one ceiling), written in
        # closed form so that an exported graph's symbolic sizes stay small.
        sizes = [(ceil_div(h, 2**i), ceil_div(w, 2**i)) for i in range(len(self.layers) + 1)]
        x = x.flatten(2).transpose(1, 2)
        outs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x, sizes[i], sizes[i + 1])
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(b, *sizes[i], -1).permute(0, 3, 1, 2).contiguous())
        return outs


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def create_swin(name: str) -> SwinTransformer:
    try:
        return SwinTransformer(SWIN_CONFIGS[name])
    except KeyError:
        raise KeyError(f"unknown Swin backbone {name!r}; choose one of {sorted(SWIN_CONFIGS)}") from None

"""BiRefNet: Bilateral Reference for High-Resolution Dichotomous Image Segmentation.

Zheng et al., CAAI Artificial Intelligence Research 2024 (upstream: github.com/ZhengPeng7/BiRefNet).
The network with the layer names of the released checkpoints, so that their state dicts load
with strict key matching. In eval mode it returns the final logits; in training mode it also
returns what the released recipe supervises (`TrainingOutputs`): the decoder's side predictions
at strides 32, 16 and 8 and the gradient-reference ("out_ref") predictions with their targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BasicDecBlk, SimpleConvs, patchify
from .swin import SWIN_CONFIGS, create_swin

if TYPE_CHECKING:
    from ..variants import Variant
    from ..weights import WeightsInfo

__all__ = [
    "BACKBONES",
    "BiRefNet",
    "DecoderWidths",
    "TrainingOutputs",
    "checkpoint_filter_fn",
    "create_model",
    "image_gradient",
]

BACKBONES: tuple[str, ...] = tuple(SWIN_CONFIGS)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class DecoderWidths:
    """The decoder's inner widths, which the released network fixes whatever the backbone."""

    block: int = 64  # BasicDecBlk's inner channels
    aspp: int = 256  # each deformable ASPP branch
    patch: int = 64  # the image-patch ("ipt") blocks' inner channels


#: Decoders narrower than the release's, per backbone; the rest of the decoder follows the
#: backbone's channels as in every release.
RELEASED_WIDTHS = DecoderWidths()
DECODER_WIDTHS: dict[str, DecoderWidths] = {"swin_v1_demo": DecoderWidths(block=32, aspp=48, patch=16)}


class TrainingOutputs(NamedTuple):
    """What a training forward returns, in the reference's order within each list.

    ``side_logits``: stride 32, 16 and 8 predictions (multi-stage supervision), then ``logits``
    at full size. ``gradient_logits``: the gradient-reference predictions at strides 32, 16 and 8;
    ``gradient_targets``: their full-size targets, the image's gradient map gated by the side
    prediction of the same level (``image_gradient(x) * resize(side_logits[i])``).
    """

    side_logits: list[torch.Tensor]
    logits: torch.Tensor
    gradient_logits: list[torch.Tensor]
    gradient_targets: list[torch.Tensor]

    @property
    def scaled_logits(self) -> list[torch.Tensor]:
        """Every supervised mask prediction, coarsest first, as the reference's pixel loss sees them."""
        return [*self.side_logits, self.logits]


def resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """The one resize BiRefNet uses inside the network."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def image_gradient(x: torch.Tensor) -> torch.Tensor:
    """5x5 Laplacian (normalised by its absolute sum, reflect-padded) of the channel-mean image.

    The reference's gradient-reference target source: kornia's ``laplacian(mean(x), 5)``.
    """
    kernel = torch.ones(1, 1, 5, 5, dtype=x.dtype, device=x.device)
    kernel[0, 0, 2, 2] = -24.0
    grey = F.pad(x.mean(dim=1, keepdim=True), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(grey, kernel / 48.0)


def _gradient_head(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))


def _point_head(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 1, 1))


class Decoder(nn.Module):
    """Coarse-to-fine decoder with image-patch inputs and gradient-attention refinement."""

    def __init__(self, channels: tuple[int, int, int, int], widths: DecoderWidths = RELEASED_WIDTHS) -> None:
        super().__init__()
        ch = channels  # deepest first: 16C, 8C, 4C, 2C
        dec_out = (ch[1], ch[2], ch[3], ch[3] // 2)
        ipt_out = tuple(c // 8 for c in ch)
        patch, block, aspp = widths.patch, widths.block, widths.aspp
        self.ipt_blk5 = SimpleConvs(3 * 32 * 32, ipt_out[0], patch)
        self.ipt_blk4 = SimpleConvs(3 * 16 * 16, ipt_out[0], patch)
        self.ipt_blk3 = SimpleConvs(3 * 8 * 8, ipt_out[1], patch)
        self.ipt_blk2 = SimpleConvs(3 * 4 * 4, ipt_out[2], patch)
        self.ipt_blk1 = SimpleConvs(3, ipt_out[3], patch)
        self.decoder_block4 = BasicDecBlk(ch[0] + ipt_out[0], dec_out[0], block, aspp)
        self.decoder_block3 = BasicDecBlk(ch[1] + ipt_out[0], dec_out[1], block, aspp)
        self.decoder_block2 = BasicDecBlk(ch[2] + ipt_out[1], dec_out[2], block, aspp)
        self.decoder_block1 = BasicDecBlk(ch[3] + ipt_out[2], dec_out[3], block, aspp)
        self.conv_out1 = _point_head(dec_out[3] + ipt_out[3])
        self.lateral_block4 = _Lateral(ch[1], dec_out[0])
        self.lateral_block3 = _Lateral(ch[2], dec_out[1])
        self.lateral_block2 = _Lateral(ch[3], dec_out[2])
        for level, c in zip((4, 3, 2), dec_out[:3], strict=True):
            self.add_module(f"conv_ms_spvn_{level}", nn.Conv2d(c, 1, 1))
        for level, c in zip((4, 3, 2), dec_out[:3], strict=True):
            self.add_module(f"gdt_convs_{level}", _gradient_head(c))
        for kind in ("pred", "attn"):
            for level in (4, 3, 2):
                self.add_module(f"gdt_convs_{kind}_{level}", _point_head(16))

    def _gradient_attention(self, p: torch.Tensor, level: int, sides: list | None) -> torch.Tensor:
        """p gated by its gradient attention; with `sides`, also records the level's side and
        gradient-reference logits there (training)."""
        features = getattr(self, f"gdt_convs_{level}")(p)
        if sides is not None:
            sides.append(
                (
                    getattr(self, f"conv_ms_spvn_{level}")(p),
                    getattr(self, f"gdt_convs_pred_{level}")(features),
                )
            )
        return p * torch.sigmoid(getattr(self, f"gdt_convs_attn_{level}")(features))

    def _with_patches(self, d: torch.Tensor, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        return torch.cat([d, block(resize(patchify(x, d), d.shape[2:]))], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        f1: torch.Tensor,
        f2: torch.Tensor,
        f3: torch.Tensor,
        f4: torch.Tensor,
        sides: list | None = None,
    ) -> torch.Tensor:
        """Final logits; `sides` (a list) receives (side logits, gradient logits) per level, deepest first."""
        d4 = self._with_patches(f4, x, self.ipt_blk5)
        p4 = self._gradient_attention(self.decoder_block4(d4), 4, sides)
        d3 = resize(p4, f3.shape[2:]) + self.lateral_block4(f3)
        p3 = self._gradient_attention(self.decoder_block3(self._with_patches(d3, x, self.ipt_blk4)), 3, sides)
        d2 = resize(p3, f2.shape[2:]) + self.lateral_block3(f2)
        p2 = self._gradient_attention(self.decoder_block2(self._with_patches(d2, x, self.ipt_blk3)), 2, sides)
        d1 = resize(p2, f1.shape[2:]) + self.lateral_block2(f1)
        return self._logits(self.decoder_block1(self._with_patches(d1, x, self.ipt_blk2)), x)

    def _logits(self, p1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """conv_out1(cat[resize(p1, full size), ipt_blk1(x)]) without any full-size feature map.

        Exact rewrites of the released network's head. Bilinear resizing commutes with the 1x1
        output convolution (both are linear per pixel and resize weights sum to one), so `p1` is
        projected to one channel at stride 4 before it is upsampled; the image-patch share is a
        chain of linear convolutions and is computed as one (`_patch_logits`). At 1024^2 this
        skips upsampling 2C channels to full size, two full-size 3x3 convolutions with 64
        channels and a concatenation.
        """
        head = cast(nn.Conv2d, self.conv_out1[0])
        assert head.bias is not None  # the released head has a bias
        projection = head.weight[:, : p1.shape[1]]
        return resize(F.conv2d(p1, projection), x.shape[2:]) + self._patch_logits(
            x, head.weight[:, p1.shape[1] :, 0, 0], head.bias
        )

    def _patch_logits(
        self, x: torch.Tensor, head_weight: torch.Tensor, head_bias: torch.Tensor
    ) -> torch.Tensor:
        """head(ipt_blk1(x)): 3x3 conv -> 3x3 conv -> 1x1 conv, with no activation between.

        The second 3x3 and the 1x1 fold into one 3x3 filter, and that into the first, giving one
        5x5 filter from 3 channels to 1. The fold is exact except on the outermost pixel ring,
        where the released network zero-pads the 64-channel map and the fold would extend it;
        that ring is recomputed the released way from 3-pixel strips.
        """
        first, second = self.ipt_blk1.conv1, self.ipt_blk1.conv_out
        assert first.bias is not None and second.bias is not None  # the released convolutions have biases
        w1, b1 = first.weight.float(), first.bias.float()
        w2 = torch.einsum("oc,cikl->oikl", head_weight.float(), second.weight.float())
        b2 = head_bias.float() + head_weight.float() @ second.bias.float()
        folded = F.conv2d(w1.transpose(0, 1), w2.flip(2, 3), padding=2).transpose(0, 1)
        folded_bias = b2 + w2.sum((2, 3)) @ b1
        w1, b1, w2, b2 = (t.to(x.dtype) for t in (w1, b1, w2, b2))
        out = F.conv2d(x, folded.to(x.dtype), folded_bias.to(x.dtype), padding=2)

        def released(strip: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.conv2d(strip, w1, b1, padding=1), w2, b2, padding=1)

        out[:, :, :1] = released(x[:, :, :3])[:, :, :1]
        out[:, :, -1:] = released(x[:, :, -3:])[:, :, -1:]
        out[:, :, :, :1] = released(x[:, :, :, :3])[:, :, :, :1]
        out[:, :, :, -1:] = released(x[:, :, :, -3:])[:, :, :, -1:]
        return out


class _Lateral(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BiRefNet(nn.Module):
    """Maps a normalised B x 3 x H x W batch (H, W multiples of 32) to B x 1 x H x W logits."""

    #: Set by `birefnet_core.weights` when it loads the model: the release and the file it came from.
    variant: Variant | None
    weights: WeightsInfo

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.bb = create_swin(backbone)
        c = self.bb.channels
        # After the half-resolution "cat" every stage has twice its channels.
        enc = tuple(2 * ci for ci in c)
        widths = DECODER_WIDTHS.get(backbone, RELEASED_WIDTHS)
        self.squeeze_module = nn.Sequential(BasicDecBlk(sum(enc), enc[3], widths.block, widths.aspp))
        self.decoder = Decoder((enc[3], enc[2], enc[1], enc[0]), widths)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features at full and half input scale, concatenated, with global context on f4."""
        full = self.bb(x)
        half = self.bb(resize(x, (x.shape[2] // 2, x.shape[3] // 2)))
        f1, f2, f3, f4 = (
            torch.cat([a, resize(b, a.shape[2:])], dim=1) for a, b in zip(full, half, strict=True)
        )
        f4 = torch.cat(
            [resize(f1, f4.shape[2:]), resize(f2, f4.shape[2:]), resize(f3, f4.shape[2:]), f4], dim=1
        )
        return [f1, f2, f3, f4]

    def forward(self, x: torch.Tensor) -> torch.Tensor | TrainingOutputs:
        """Logits in eval mode; `TrainingOutputs` in training mode."""
        if x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"BiRefNet needs H and W divisible by 32, got {tuple(x.shape[2:])}")
        f1, f2, f3, f4 = self.encode(x)
        if not self.training:
            return self.decoder(x, f1, f2, f3, self.squeeze_module(f4))
        sides: list[tuple[torch.Tensor, torch.Tensor]] = []
        logits = self.decoder(x, f1, f2, f3, self.squeeze_module(f4), sides)
        gradient = image_gradient(x)
        side_logits = [side for side, _ in sides]
        return TrainingOutputs(
            side_logits=side_logits,
            logits=logits,
            gradient_logits=[g for _, g in sides],
            gradient_targets=[gradient * resize(side, x.shape[2:]) for side in side_logits],
        )


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP / torch.compile wrapper prefixes from released or fine-tuned checkpoints."""
    cleaned = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        cleaned[key] = value
    return cleaned


def create_model(backbone: str) -> BiRefNet:
    """A randomly initialised BiRefNet in eval mode; nothing is downloaded."""
    if backbone not in SWIN_CONFIGS:
        raise KeyError(f"unknown BiRefNet backbone {backbone!r}; choose one of {list(BACKBONES)}")
    return BiRefNet(backbone).eval()

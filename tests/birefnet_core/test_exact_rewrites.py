"""Each speed rewrite of the network computes what the released formulation computes.

The references below are the straightforward forms (as the upstream code writes them): pad, roll
and partition the feature map for Swin attention with a per-window mask; upsample and concatenate
before BiRefNet's 1x1 head; separate offset and modulator convolutions.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from birefnet_core.model.birefnet import Decoder, resize
from birefnet_core.model.layers.deform_conv import DeformableConv2d
from birefnet_core.model.swin import (
    SHIFT_MASK_VALUE,
    SwinBlock,
    WindowAttention,
    shifted_window_mask,
    window_partition,
    window_token_order,
    windowed_attention,
)

ATOL = 2e-5


def _window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, window * window, C) -> (B, H, W, C), the inverse of `window_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def _reference_shift_mask(hp: int, wp: int, window: int, shift: int) -> torch.Tensor:
    regions = torch.zeros((1, hp, wp, 1))
    label = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, hs, ws, :] = label
            label += 1
    labels = window_partition(regions, window).squeeze(-1)
    mask = labels.unsqueeze(1) - labels.unsqueeze(2)
    return mask.masked_fill(mask != 0, SHIFT_MASK_VALUE).masked_fill(mask == 0, 0.0)


def _reference_block(block: SwinBlock, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Swin v1 block as released: zero-pad after norm1, roll, partition, attend every slot."""
    b, _, c = x.shape
    window, shift, attn = block.window, block.shift, block.attn
    shortcut = x
    x = block.norm1(x).view(b, h, w, c)
    pad_b, pad_r = -h % window, -w % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = window_partition(x, window)
    nw, n = windows.shape[:2]
    heads = attn.num_heads
    q, k, v = attn.qkv(windows).reshape(nw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    bias = attn.position_bias().unsqueeze(0)
    if shift:
        mask = _reference_shift_mask(hp, wp, window, shift)
        bias = (bias + mask.unsqueeze(1)).repeat(b, 1, 1, 1)
    scores = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1) + bias
    out = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(nw, n, c))
    x = _window_reverse(out, window, hp, wp)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + x[:, :h, :w, :].reshape(b, h * w, c)
    return x + block.mlp(block.norm2(x))


def _block_input(block: SwinBlock, h: int, w: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(h * 100 + w)
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 0.5)
    x = torch.randn(batch, h * w, block.norm1.normalized_shape[0])
    window = block.window
    mask = shifted_window_mask(
        -(-h // window) * window, -(-w // window) * window, window, window // 2, x.device
    )
    return x, mask


@pytest.mark.parametrize("shift", [0, 3], ids=["plain", "shifted"])
@pytest.mark.parametrize(("h", "w", "batch"), [(14, 14, 1), (9, 17, 2), (5, 3, 3)])
def test_swin_block_matches_the_padded_rolled_formulation(shift, h, w, batch):
    block = SwinBlock(dim=24, num_heads=3, window=7, shift=shift).eval()
    x, mask = _block_input(block, h, w, batch)
    with torch.no_grad():
        np.testing.assert_allclose(block(x, h, w, mask), _reference_block(block, x, h, w), atol=ATOL)


def test_token_order_is_a_bijection_between_real_tokens_and_their_slots():
    gather, scatter = window_token_order(9, 17, 7, 3, torch.device("cpu"))
    assert gather.numel() == 14 * 21  # padded to whole windows
    assert torch.equal(gather[scatter], torch.arange(9 * 17))
    assert int((gather == 9 * 17).sum()) == 14 * 21 - 9 * 17  # every other slot is padding


def test_cpu_reduced_precision_attention_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 6, 49, 32) for _ in range(3))
    bias = torch.randn(1, 6, 49, 49)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    got = windowed_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias.bfloat16()).float()
    np.testing.assert_allclose(got, want, atol=0.05)
    assert (got - want).abs().mean() < 5e-3


def test_attention_bias_is_reused_in_inference_and_follows_weight_updates():
    attn = WindowAttention(dim=24, window=7, num_heads=3)
    mask = shifted_window_mask(14, 14, 7, 3, torch.device("cpu"))
    with torch.no_grad():
        first = attn.attention_bias(mask, torch.float32, (14, 14, 3))
        assert attn.attention_bias(mask, torch.float32, (14, 14, 3)) is first
        assert attn.attention_bias(mask, torch.bfloat16, (14, 14, 3)).dtype == torch.bfloat16
        other = shifted_window_mask(7, 7, 7, 3, torch.device("cpu"))  # the half-scale backbone pass
        attn.attention_bias(other, torch.float32, (7, 7, 3))
        assert attn.attention_bias(mask, torch.float32, (14, 14, 3)) is first  # both shapes kept
        attn.relative_position_bias_table.add_(1.0)
        updated = attn.attention_bias(mask, torch.float32, (14, 14, 3))
    np.testing.assert_allclose(updated, first + 1.0, atol=1e-6)


def test_attention_bias_trains_and_a_cached_mask_serves_backward():
    with torch.inference_mode():
        shifted_window_mask(14, 14, 7, 3, torch.device("cpu"))  # cached under inference mode
    block = SwinBlock(dim=24, num_heads=3, window=7, shift=3).train()
    x, mask = _block_input(block, 14, 14, 2)
    assert not mask.is_inference()
    block(x, 14, 14, mask).square().mean().backward()
    grad = block.attn.relative_position_bias_table.grad
    assert grad is not None and grad.abs().sum() > 0


def test_decoder_head_equals_upsample_then_concatenate():
    decoder = Decoder((768, 384, 192, 96)).eval()
    torch.manual_seed(1)
    for module in (decoder.conv_out1, decoder.ipt_blk1):
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=0.2)
    p1 = torch.randn(2, decoder.conv_out1[0].in_channels - decoder.ipt_blk1.conv_out.out_channels, 16, 24)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = decoder.conv_out1(torch.cat([resize(p1, x.shape[2:]), decoder.ipt_blk1(x)], dim=1))
        got = decoder._logits(p1, x)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_fused_offset_and_modulator_convolution_equals_the_two_convolutions():
    torch.manual_seed(2)
    conv = DeformableConv2d(16, 8, kernel_size=3, padding=1)
    for module in (conv.offset_conv, conv.modulator_conv):
        torch.nn.init.normal_(module.weight, std=0.1)
        torch.nn.init.normal_(module.bias, std=0.1)
    x = torch.randn(2, 16, 11, 13)
    offset, modulation = conv.offsets_and_modulation(x)
    np.testing.assert_allclose(offset.detach(), conv.offset_conv(x).detach(), atol=1e-5)
    np.testing.assert_allclose(
        modulation.detach(), 2 * torch.sigmoid(conv.modulator_conv(x)).detach(), atol=1e-6
    )


def test_aspp_pooled_branch_as_a_bias_equals_upsample_and_concatenate():
    from birefnet_core.model.layers.aspp import ASPPDeformable

    torch.manual_seed(3)
    aspp = ASPPDeformable(16, branch_channels=8).eval()
    for module in aspp.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.running_mean, std=0.2)
            torch.nn.init.uniform_(module.running_var, 0.5, 2.0)
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
    x = torch.randn(2, 16, 12, 20)
    with torch.no_grad():
        first = aspp.aspp1(x)
        pooled = F.interpolate(
            aspp.global_avg_pool(x), size=first.shape[2:], mode="bilinear", align_corners=True
        )
        stacked = torch.cat((first, *(branch(x) for branch in aspp.aspp_deforms), pooled), dim=1)
        want = aspp.relu(aspp.bn1(aspp.conv1(stacked)))
        got = aspp(x)
    np.testing.assert_allclose(got, want, atol=1e-5)

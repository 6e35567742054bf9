import pytest
import torch
from torchvision.ops import deform_conv2d

from birefnet_core.model.layers import DeformableConv2d, deform_conv2d_torch
from tests.support.deform_inputs import deform_case


@pytest.mark.parametrize("kernel", [1, 3, 7])
@pytest.mark.parametrize("batch", [1, 2])
def test_pure_torch_kernel_equals_torchvision(kernel, batch):
    x, offset, mask, weight = deform_case(kernel, batch)
    expected = deform_conv2d(x, offset, weight, padding=kernel // 2, mask=mask)
    actual = deform_conv2d_torch(x, offset, weight, mask, kernel // 2)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-4


def test_module_gives_the_same_result_with_either_kernel(monkeypatch):
    torch.manual_seed(0)
    layer = DeformableConv2d(8, 12, kernel_size=3, padding=1)
    torch.nn.init.normal_(layer.offset_conv.weight, std=0.5)
    x = torch.randn(2, 8, 16, 20)
    with torch.inference_mode():
        monkeypatch.setattr(DeformableConv2d, "kernel", "torchvision")
        reference = layer(x)
        monkeypatch.setattr(DeformableConv2d, "kernel", "torch")
        pure = layer(x)
    assert (reference - pure).abs().max().item() <= 1e-4


def test_pure_kernel_runs_in_bfloat16_close_to_float32():
    torch.manual_seed(1)
    x = torch.randn(1, 8, 12, 12)
    offset = torch.randn(1, 18, 12, 12)
    mask = torch.rand(1, 9, 12, 12)
    weight = torch.randn(4, 8, 3, 3) / 3
    full = deform_conv2d_torch(x, offset, weight, mask, 1)
    half = deform_conv2d_torch(x.bfloat16(), offset.bfloat16(), weight.bfloat16(), mask.bfloat16(), 1)
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().max().item() < 0.1 * full.abs().max().item()


def test_kernel_choice_follows_device_and_dtype():
    from birefnet_core.model.layers.deform_conv import select_deform_kernel

    assert select_deform_kernel(torch.zeros(1)) == "torch"
    assert select_deform_kernel(torch.zeros(1, dtype=torch.bfloat16)) == "torch"
    assert select_deform_kernel(torch.zeros(1), "torchvision") == "torchvision"

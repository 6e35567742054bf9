"""The CUDA path itself: reference parity, both deformable kernels, no hidden host syncs, no
recompiles for ragged batches, and a real out-of-memory back-off. Skipped without CUDA."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d

from birefnet_core.model.layers import deform_conv2d_torch
from birefnet_core.predictor import Predictor
from birefnet_core.size import Size
from tests.support.deform_inputs import deform_case
from tests.support.deterministic_weights import det_input, det_model
from tests.support.disc_images import disc_on_texture

pytestmark = pytest.mark.gpu

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def exact_float32(monkeypatch):
    """TF32 off for matmuls and convolutions, so float32 on CUDA is float32."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def test_reference_parity_in_float32_on_cuda(exact_float32):
    model = det_model("swin_v1_t").cuda()
    with torch.inference_mode():
        logits = model(det_input(batch=1, h=256, w=256, seed=1).cuda()).cpu().numpy()
    reference = np.load(FIXTURES / "logits_swin_v1_t_1x256x256_s1.npy")
    assert np.abs(logits - reference).max() <= 1e-3


@pytest.mark.parametrize("kernel", [1, 3, 7])
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_deformable_kernels_on_cuda_match_float32_on_cpu(exact_float32, kernel, batch):
    x, offset, mask, weight = deform_case(kernel, batch)
    want = deform_conv2d(x, offset, weight, padding=kernel // 2, mask=mask)
    scale = want.abs().max().item()
    cuda = [t.cuda() for t in (x, offset, weight, mask)]
    vision = deform_conv2d(cuda[0], cuda[1], cuda[2], padding=kernel // 2, mask=cuda[3]).cpu()
    pure = deform_conv2d_torch(cuda[0], cuda[1], cuda[2], cuda[3], kernel // 2).cpu()
    assert (vision - want).abs().max().item() <= 1e-4 * scale
    assert (pure - want).abs().max().item() <= 1e-4 * scale
    for dtype in (torch.float16, torch.bfloat16):
        low = deform_conv2d_torch(*(t.to(dtype) for t in cuda[:3]), cuda[3].to(dtype), kernel // 2)
        assert low.dtype == dtype
        assert (low.float().cpu() - want).abs().max().item() <= 0.05 * scale


def _pixels(count: int, size: int = 128) -> np.ndarray:
    return np.stack([disc_on_texture(size, size, seed) for seed in range(count)])


def test_inference_makes_no_hidden_host_syncs():
    predictor = Predictor(det_model(), size=Size(128, 128), device="cuda", dtype="float16")
    predictor.warm_up(batch_size=4)
    pixels = _pixels(7)
    torch.cuda.set_sync_debug_mode("error")
    try:
        probs = predictor.infer_batches(pixels, batch_size=4, quantize=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert probs.shape == (7, 128, 128) and probs.dtype == np.uint8


def test_padded_batches_never_recompile_after_warm_up(monkeypatch):
    import torch._dynamo

    predictor = Predictor(det_model(), size=Size(128, 128), device="cuda", dtype="float16", compile=True)
    assert predictor.pad_batches
    predictor.warm_up(batch_size=4)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    for count in (1, 3, 5, 2, 7):
        assert predictor.infer_batches(_pixels(count), batch_size=4).shape == (count, 128, 128)


def test_a_real_out_of_memory_halves_the_batch_and_the_results_stay_the_same(exact_float32):
    torch.cuda.empty_cache()
    predictor = Predictor(det_model(), size=Size(512, 512), device="cuda", pad_batches=False)
    pixels = _pixels(8, 512)
    want = predictor.infer_batches(pixels[:2], batch_size=1)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    predictor.infer_batches(pixels[:1], batch_size=1)
    per_image = torch.cuda.max_memory_allocated() - base
    total = torch.cuda.get_device_properties(0).total_memory
    # Room for about two and a half images: batch 8 cannot fit, batch 2 can.
    torch.cuda.set_per_process_memory_fraction(min(1.0, (base + 2.5 * per_image) / total))
    try:
        got = predictor.infer_batches(pixels, batch_size=8)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert predictor.max_batch is not None and predictor.max_batch <= 2
    assert got.shape == (8, 512, 512)
    np.testing.assert_allclose(got[:2], want, atol=1e-4)


def test_overlapped_batches_come_back_complete_and_in_order(exact_float32):
    predictor = Predictor(det_model(), size=Size(128, 128), device="cuda")
    pixels = _pixels(9)
    together = predictor.infer_batches(pixels, batch_size=4)
    alone = np.concatenate([predictor.infer(pixels[i : i + 1]) for i in range(9)])
    np.testing.assert_allclose(together, alone, atol=1e-4)

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from birefnet_core import create_model, get_variant
from birefnet_core.precision import resolve_compute_dtype
from birefnet_core.predictor import Predictor
from tests.detweights import det_weights


@pytest.fixture(scope="module")
def model():
    net = create_model("swin_v1_t")
    net.load_state_dict(det_weights(net.state_dict()))
    return net


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """A bright disc on a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    img[disc] = (230, 200, 40)
    return img


def _mixed_batch() -> list:
    rgb = _scene(150, 220, 0)
    sixteen = _scene(90, 70, 1)[..., 0].astype(np.uint16) * 257
    return [
        Image.fromarray(rgb),
        Image.fromarray(rgb[:77, :53, 0]),  # L
        Image.fromarray(np.dstack([_scene(64, 40, 2), np.full((64, 40), 128, np.uint8)]), "RGBA"),
        Image.fromarray(_scene(33, 47, 3)).convert("P"),
        Image.fromarray(_scene(45, 31, 4)).convert("CMYK"),
        Image.fromarray(sixteen),  # I;16
        sixteen,  # a bare uint16 array
        np.zeros((1, 1, 3), np.uint8),
    ]


def test_mixed_sizes_and_modes_give_masks_of_each_input_size(model):
    predictor = Predictor(model, resolution=(96, 64))
    images = _mixed_batch()
    assert {getattr(i, "mode", None) for i in images} >= {"RGB", "L", "RGBA", "P", "CMYK", "I;16"}
    masks = predictor.predict(images, batch_size=3)
    assert len(masks) == len(images)
    for image, mask in zip(images, masks, strict=True):
        h, w = (image.height, image.width) if hasattr(image, "height") else image.shape[:2]
        assert mask.shape == (h, w)
        assert mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_sixteen_bit_data_is_scaled_not_clipped(model):
    predictor = Predictor(model, resolution=(64, 64))
    eight = _scene(64, 64, 5)[..., 0]
    as_uint16 = Image.fromarray(eight.astype(np.uint16) * 257)
    np.testing.assert_array_equal(predictor.prepare(as_uint16).pixels, predictor.prepare(eight).pixels)


def test_stages_compose_to_predict(model):
    predictor = Predictor(model, resolution=(64, 64))
    images = [_scene(100, 80, 6), _scene(50, 120, 7)]
    prepared = [predictor.prepare(i) for i in images]
    probs = predictor.infer(np.stack([p.pixels for p in prepared]))
    assert probs.shape == (2, 64, 64)
    staged = [predictor.finish(p, item.original_size) for p, item in zip(probs, prepared, strict=True)]
    for a, b in zip(staged, predictor.predict(images), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_batching_does_not_change_results(model):
    predictor = Predictor(model, resolution=(64, 64))
    images = [_scene(70, 90, s) for s in range(3)]
    together = predictor.predict(images, batch_size=3)
    alone = predictor.predict(images, batch_size=1)
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_agrees_with_float32(model):
    images = [_scene(128, 160, 8), _scene(96, 96, 9)]
    fp32 = Predictor(model, resolution=(128, 128)).predict(images)
    bf16_predictor = Predictor(model, resolution=(128, 128), dtype="bf16", strict_dtype=True)
    assert bf16_predictor.dtype == torch.bfloat16
    bf16 = bf16_predictor.predict(images)
    for a, b in zip(fp32, bf16, strict=True):
        assert 0.05 < (a > 0.5).mean() < 0.95, "the mask must have both classes for IoU to mean anything"
        iou = np.logical_and(a > 0.5, b > 0.5).sum() / np.logical_or(a > 0.5, b > 0.5).sum()
        assert iou >= 0.99


def test_bfloat16_without_hardware_support_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr("birefnet_core.precision.cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_compute_dtype(torch.device("cpu"), "bf16") == torch.float32
    assert "no native bfloat16" in caplog.text
    assert resolve_compute_dtype(torch.device("cpu"), "bf16", strict=True) == torch.bfloat16
    monkeypatch.setattr("birefnet_core.precision.cpu_has_native_bf16", lambda: True)
    assert resolve_compute_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert resolve_compute_dtype(torch.device("cuda"), "fp16") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_compute_dtype(torch.device("cpu"), "int8")


def test_dynamic_variant_keeps_native_size_rounded_to_32(model):
    predictor = Predictor(model, variant=get_variant("dynamic"))
    assert predictor.size_for(100, 150) == (96, 160)
    assert predictor.size_for(10, 10) == (32, 32)
    assert max(predictor.size_for(9000, 4000)) <= 2304
    masks = predictor.predict([_scene(100, 150, 10), _scene(64, 64, 11)])
    assert [m.shape for m in masks] == [(100, 150), (64, 64)]


def test_fixed_variant_size_comes_from_the_registry(model):
    predictor = Predictor(model, variant=get_variant("lite-2k"))
    assert predictor.size_for(10, 10) == (1440, 2560)
    with pytest.raises(ValueError, match="multiple of 32"):
        Predictor(model, resolution=(100, 64)).size_for(10, 10)


def test_unreadable_array_shapes_are_refused(model):
    predictor = Predictor(model, resolution=(64, 64))
    with pytest.raises(ValueError, match="shape"):
        predictor.prepare(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="zero size"):
        predictor.prepare(np.zeros((0, 4, 3), np.uint8))

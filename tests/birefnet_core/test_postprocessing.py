"""Probabilities and 8-bit masks resized to the original image size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from birefnet_core.postprocessing import resize_mask, resize_probabilities
from birefnet_core.quantization import quantize_probabilities


def _smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (0.5 + 0.5 * np.sin(xx / 8.0) * np.cos(yy / 6.0)).astype(np.float32)


@pytest.mark.parametrize("size", [(20, 30), (128, 100), (64, 64), (17, 200), (120, 45)])
def test_resize_probabilities_shape_dtype_and_range(size):
    out = resize_probabilities(_smooth(64, 64), size)
    assert out.shape == size
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_resize_probabilities_same_size_is_identity():
    p = _smooth(31, 47)
    np.testing.assert_array_equal(resize_probabilities(p, (31, 47)), p)
    np.testing.assert_array_equal(resize_probabilities(torch.from_numpy(p), (31, 47)), p)


@pytest.mark.parametrize("size", [(10, 12), (90, 70)])
def test_resize_probabilities_keeps_a_constant_map(size):
    out = resize_probabilities(np.full((40, 30), 0.3, np.float32), size)
    np.testing.assert_allclose(out, 0.3, atol=1e-6)


@pytest.mark.parametrize("size", [(20, 30), (128, 100), (17, 200), (120, 45), (1, 1)])
def test_resize_mask_shape_and_dtype(size):
    out = resize_mask(quantize_probabilities(_smooth(64, 64)), size)
    assert out.shape == size
    assert out.dtype == np.uint8


def test_resize_mask_same_size_is_identity():
    mask = np.random.default_rng(1).integers(0, 256, (23, 41), dtype=np.uint8)
    np.testing.assert_array_equal(resize_mask(mask, (23, 41)), mask)


@pytest.mark.parametrize("size", [(10, 12), (90, 70), (30, 90)])
def test_resize_mask_keeps_a_constant_mask(size):
    out = resize_mask(np.full((40, 30), 77, np.uint8), size)
    assert (out == 77).all()


@pytest.mark.parametrize("size", [(30, 45), (120, 180), (61, 91), (17, 200), (50, 80)])
def test_resize_mask_agrees_with_resizing_floats_within_one_level(size):
    p = _smooth(60, 90) if size != (50, 80) else _smooth(64, 64)
    fast = resize_mask(quantize_probabilities(p), size)
    exact = quantize_probabilities(resize_probabilities(p, size))
    assert np.abs(fast.astype(int) - exact.astype(int)).max() <= 1


@pytest.mark.parametrize("size", [(30, 45), (50, 80), (128, 100)])
def test_resize_mask_agrees_with_pil_bilinear(size):
    mask = quantize_probabilities(_smooth(64, 64))
    pil = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    assert np.abs(resize_mask(mask, size).astype(int) - pil.astype(int)).max() <= 1

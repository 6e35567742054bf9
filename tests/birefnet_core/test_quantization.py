"""Probabilities <-> 8-bit levels: rounding, clipping, thresholds, and arrays and tensors agreeing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from birefnet_core.quantization import dequantize_probabilities, quantize_probabilities


def _random_probabilities(dtype=np.float32, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(0).uniform(low, high, (33, 17)).astype(dtype)


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize(
    ("probability", "level"),
    [
        (-1.0, 0),
        (-1e-6, 0),
        (0.0, 0),
        (0.49 / 255, 0),
        (0.51 / 255, 1),
        (1.49 / 255, 1),
        (1.51 / 255, 2),
        (127.6 / 255, 128),
        (254.49 / 255, 254),
        (254.51 / 255, 255),
        (1.0, 255),
        (1.0 + 1e-6, 255),
        (2.0, 255),
        (1e9, 255),
    ],
)
def test_quantize_rounds_to_the_nearest_level_and_clips(probability, level, as_tensor):
    values = np.full((2, 3), probability, np.float64)
    out = quantize_probabilities(torch.from_numpy(values) if as_tensor else values)
    out = out.numpy() if as_tensor else out
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    assert (out == level).all()


def test_quantize_float32_matches_rounding_in_float64_but_at_ties():
    p = _random_probabilities(low=-0.2, high=1.2)
    expected = np.rint(np.clip(p.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    diff = np.abs(quantize_probabilities(p).astype(int) - expected)
    # float32 scaling may flip values that sit within rounding error of a .5 boundary
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999


def test_quantize_float64_is_rounded_in_float64():
    p = _random_probabilities(np.float64, low=-0.2, high=1.2)
    expected = np.rint(np.clip(p, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(quantize_probabilities(p), expected)


def test_quantize_keeps_the_formulas_it_replaced_bit_for_bit():
    p = _random_probabilities()
    # The scene blend's rounding, and the accelerator's rounding of sigmoid outputs.
    np.testing.assert_array_equal(quantize_probabilities(p), np.rint(p * 255.0).astype(np.uint8))
    tensor = torch.from_numpy(p)
    np.testing.assert_array_equal(
        quantize_probabilities(tensor).numpy(), tensor.clone().mul_(255.0).round_().to(torch.uint8).numpy()
    )


def test_tensors_and_arrays_quantise_alike_and_tensors_stay_tensors():
    p = _random_probabilities(low=-0.2, high=1.2)
    out = quantize_probabilities(torch.from_numpy(p))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), quantize_probabilities(p))
    binary = quantize_probabilities(torch.from_numpy(p), threshold=0.5)
    np.testing.assert_array_equal(binary.numpy(), quantize_probabilities(p, threshold=0.5))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_threshold_gives_0_or_255_with_the_threshold_itself_foreground(as_tensor):
    values = np.array([[0.0, 0.29, 0.3, 0.31, 1.0]], np.float32)
    out = quantize_probabilities(torch.from_numpy(values) if as_tensor else values, threshold=0.3)
    out = out.numpy() if as_tensor else out
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 255, 255, 255]]


def test_dequantize_is_the_inverse_on_every_level():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    probabilities = dequantize_probabilities(levels)
    assert probabilities.dtype == np.float32
    assert probabilities.min() == 0.0 and probabilities.max() == 1.0
    np.testing.assert_array_equal(quantize_probabilities(probabilities), levels)

"""The Predictor's accelerator settings on CUDA: reduced precision, channels-last and torch.compile
must give the masks float32 eager gives. Skipped, with the reason, where no CUDA device is present."""

import copy

import numpy as np
import pytest
import torch

from birefnet_core.predictor import Predictor
from birefnet_core.size import Size
from tests.support.deterministic_weights import det_model
from tests.support.disc_images import disc_on_texture

pytestmark = pytest.mark.gpu

SIZE = Size(128, 128)
MIN_IOU = 0.99
#: Largest probability difference allowed where only kernels, not precision, change.
SAME_PRECISION_ATOL = 1e-2


@pytest.fixture(scope="module")
def model():
    return det_model()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [disc_on_texture(128, 160, 8), disc_on_texture(96, 96, 9), disc_on_texture(200, 120, 10)]


def _predictor(model, **settings) -> Predictor:
    """A Predictor on CUDA with a copy of the model of its own: it moves the model and converts its layout."""
    predictor = Predictor(copy.deepcopy(model), size=SIZE, device="cuda", **settings)
    assert next(predictor.model.parameters()).device.type == "cuda"
    return predictor


@pytest.fixture(scope="module")
def float32_masks(model, images) -> list[np.ndarray]:
    return _predictor(model).predict(images, batch_size=2)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a > 0.5, b > 0.5).sum() / np.logical_or(a > 0.5, b > 0.5).sum())


def _assert_same_masks(reference: list[np.ndarray], other: list[np.ndarray], atol: float | None) -> None:
    for want, got in zip(reference, other, strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        assert 0.05 < (want > 0.5).mean() < 0.95, "the mask must have both classes for IoU to mean anything"
        assert _iou(want, got) >= MIN_IOU
        if atol is not None:
            assert np.abs(got - want).max() <= atol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_reduced_precision_agrees_with_float32(model, images, float32_masks, dtype):
    predictor = _predictor(model, dtype=dtype, strict_dtype=True)
    assert predictor.dtype == dtype
    _assert_same_masks(float32_masks, predictor.predict(images, batch_size=2), atol=None)


def test_channels_last_agrees_with_the_default_layout(model, images, float32_masks):
    masks = _predictor(model, channels_last=True).predict(images, batch_size=2)
    _assert_same_masks(float32_masks, masks, SAME_PRECISION_ATOL)


def test_compiled_model_agrees_with_eager(model, images, float32_masks):
    masks = _predictor(model, compile=True).predict(images, batch_size=2)
    _assert_same_masks(float32_masks, masks, SAME_PRECISION_ATOL)

"""Mask quality signals, checked against their definitions computed directly with NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from birefnet_core.quality import EMPTY_FRACTION, mask_histogram, mask_quality
from connectors.manifest import MANIFEST_SCHEMA


def _uncertain(level: int) -> bool:
    return 0.1 < level / 255 < 0.9


def test_all_zero_mask_is_certain_and_empty():
    q = mask_quality(np.zeros((8, 12), np.uint8))
    assert q.mean_confidence == pytest.approx(1.0)
    assert q.uncertain_fraction == 0.0
    assert q.foreground_fraction == 0.0
    assert q.is_empty and not q.is_full


def test_all_255_mask_is_certain_and_full():
    q = mask_quality(np.full((8, 12), 255, np.uint8))
    assert q.mean_confidence == pytest.approx(1.0)
    assert q.uncertain_fraction == 0.0
    assert q.foreground_fraction == pytest.approx(1.0)
    assert q.is_full and not q.is_empty


def test_half_and_half_mask():
    mask = np.zeros((10, 10), np.uint8)
    mask[:, 5:] = 255
    q = mask_quality(mask)
    assert q.foreground_fraction == pytest.approx(0.5)
    assert q.mean_confidence == pytest.approx(1.0)
    assert q.uncertain_fraction == 0.0
    assert not q.is_empty and not q.is_full


def test_mid_grey_is_foreground_but_barely_confident():
    q = mask_quality(np.full((4, 4), 128, np.uint8))
    assert q.foreground_fraction == pytest.approx(1.0)  # 128/255 >= 0.5
    assert q.mean_confidence == pytest.approx(abs(2 * 128 / 255 - 1))
    assert q.uncertain_fraction == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("level", "uncertain"),
    [(0, False), (25, False), (26, True), (127, True), (128, True), (229, True), (230, False), (255, False)],
)
def test_uncertain_band_boundaries(level, uncertain):
    assert _uncertain(level) is uncertain  # the table agrees with the definition
    q = mask_quality(np.full((3, 5), level, np.uint8))
    assert q.uncertain_fraction == (1.0 if uncertain else 0.0)


def test_uncertain_fraction_over_every_grey_level():
    mask = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = sum(_uncertain(v) for v in range(256)) / 256
    assert expected == pytest.approx(204 / 256)  # 26..229
    assert mask_quality(mask).uncertain_fraction == pytest.approx(expected)


def test_signals_of_a_random_mask_match_numpy():
    mask = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    p = mask.astype(np.float64) / 255
    q = mask_quality(mask)
    assert q.mean_confidence == pytest.approx(np.mean(np.abs(2 * p - 1)), abs=1e-12)
    assert q.uncertain_fraction == pytest.approx(np.mean((p > 0.1) & (p < 0.9)), abs=1e-12)
    assert q.foreground_fraction == pytest.approx(np.mean(p >= 0.5), abs=1e-12)


@pytest.mark.parametrize(("foreground", "empty"), [(0, True), (9, True), (10, False)])
def test_empty_flag_threshold(foreground, empty):
    mask = np.zeros(10_000, np.uint8)
    mask[:foreground] = 255
    assert (foreground / mask.size < EMPTY_FRACTION) is empty
    q = mask_quality(mask.reshape(100, 100))
    assert q.is_empty is empty
    assert not q.is_full


@pytest.mark.parametrize(("background", "full"), [(0, True), (9, True), (10, False)])
def test_full_flag_threshold(background, full):
    mask = np.full(10_000, 255, np.uint8)
    mask[:background] = 0
    q = mask_quality(mask.reshape(100, 100))
    assert q.is_full is full
    assert not q.is_empty


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_probabilities_equal_their_rounded_uint8_mask(dtype):
    probs = np.random.default_rng(1).random((31, 29)).astype(dtype)
    probs[0, :4] = (-0.3, 1.7, 0.0, 1.0)  # out-of-range values clip
    rounded = np.rint(np.clip(probs.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    assert mask_quality(probs) == mask_quality(rounded)


def test_empty_array_raises():
    with pytest.raises(ValueError, match="empty"):
        mask_quality(np.zeros((0, 5), np.uint8))


def test_as_dict_keys_are_manifest_columns():
    row = mask_quality(np.zeros((2, 2), np.uint8)).as_dict()
    assert set(row) == {"mean_confidence", "uncertain_fraction", "foreground_fraction", "is_empty", "is_full"}
    assert set(row) <= set(MANIFEST_SCHEMA.names)


@pytest.mark.parametrize("view", ["plain", "transposed", "strided", "selected"])
def test_histogram_equals_bincount_for_any_layout(view):
    mask = np.random.default_rng(2).integers(0, 256, (41, 67), dtype=np.uint8)
    layouts = {"plain": mask, "transposed": mask.T, "strided": mask[::3, ::2], "selected": mask[mask > 90]}
    array = layouts[view]
    counts = mask_histogram(array)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, np.bincount(array.ravel(), minlength=256))


def test_histogram_counts_exactly_beyond_float32_precision():
    # 2**24 + 3 is not a float32; OpenCV counts in float32, so the count must be assembled in slices.
    mask = np.full(2**24 + 5, 7, np.uint8)
    mask[:2] = 200
    counts = mask_histogram(mask)
    assert counts[7] == 2**24 + 3 and counts[200] == 2 and counts.sum() == mask.size

"""The reference's augmentations keep image and mask aligned, and touch only what they should."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.training_augment import augment_pair, resize_pair


class Always:
    """A generator whose coin flips always pass (random() > threshold), otherwise numpy's."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def random(self) -> float:
        return 0.99

    def __getattr__(self, name: str):
        return getattr(self._rng, name)


def _pair() -> tuple[np.ndarray, np.ndarray]:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :20] = 200  # bright left third
    mask = np.zeros((40, 60), np.uint8)
    mask[:, :20] = 255
    return rgb, mask


def test_flip_mirrors_image_and_mask_together():
    rgb, mask = _pair()
    out_rgb, out_mask = augment_pair(rgb, mask, Always(), ["flip"])
    assert (out_mask[:, -20:] == 255).all() and (out_mask[:, :40] == 0).all()
    assert (out_rgb[:, -20:] == 200).all()


def test_rotation_turns_both_by_the_same_angle():
    rgb, mask = _pair()
    out_rgb, out_mask = augment_pair(rgb, mask, Always(3), ["rotate"])
    bright = out_rgb[..., 0] > 100
    assert out_mask.shape == mask.shape and not np.array_equal(out_mask, mask)
    assert np.mean(bright == (out_mask > 127)) > 0.97


def test_crop_keeps_at_least_ninety_percent_of_each_side_on_both():
    rgb, mask = _pair()
    out_rgb, out_mask = augment_pair(rgb, mask, np.random.default_rng(1), ["crop"])
    assert out_rgb.shape[:2] == out_mask.shape
    assert 36 <= out_mask.shape[0] < 40 and 56 <= out_mask.shape[1] < 60


def test_colour_enhancement_and_pepper_change_the_image_only():
    rgb, mask = _pair()
    rgb = rgb + np.random.default_rng(0).integers(0, 40, rgb.shape, dtype=np.uint8)
    out_rgb, out_mask = augment_pair(rgb, mask, np.random.default_rng(2), ["enhance", "pepper"])
    assert np.array_equal(out_mask, mask)
    assert not np.array_equal(out_rgb, rgb)
    peppered = augment_pair(
        np.full((100, 100, 3), 128, np.uint8), mask[:1, :1], np.random.default_rng(0), ["pepper"]
    )[0]
    changed = np.unique(peppered.reshape(-1, 3), axis=0)
    assert {tuple(c) for c in changed} <= {(0, 0, 0), (128, 128, 128), (255, 255, 255)}
    assert (peppered != 128).any(axis=2).sum() <= 15  # 0.15% of 10,000 pixels


def test_resize_brings_both_to_the_training_size_with_soft_mask_edges():
    rgb, mask = _pair()
    out_rgb, out_mask = resize_pair(rgb, mask, 32, 64)
    assert out_rgb.shape == (32, 64, 3) and out_mask.shape == (32, 64)
    assert np.count_nonzero((out_mask > 0) & (out_mask < 255)) > 0


def test_unknown_augmentations_are_refused():
    with pytest.raises(ValueError, match="unknown augmentations"):
        augment_pair(*_pair(), np.random.default_rng(0), ["mixup"])

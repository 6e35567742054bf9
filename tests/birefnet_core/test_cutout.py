"""Cut-outs and blur-fusion foreground estimation on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from birefnet_core.cutout import box_blur, estimate_foreground, make_cutout

FOREGROUND = np.array([200.0, 40.0, 40.0])
BACKGROUND = np.array([20.0, 120.0, 220.0])


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _brute_force_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window of the mirror-padded (edge not repeated) image."""
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image.astype(np.float64), pad, mode="reflect")
    h, w = image.shape[:2]
    side = 2 * radius + 1
    out = np.empty(image.shape, np.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = padded[i : i + side, j : j + side].mean(axis=(0, 1))
    return out


def _composite(h: int = 32, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A flat foreground colour over a different flat background, with a 16-pixel soft alpha ramp."""
    a = np.clip((np.arange(w) - 24) / 16, 0, 1)[None, :].repeat(h, axis=0)
    image = np.rint(a[..., None] * FOREGROUND + (1 - a[..., None]) * BACKGROUND).astype(np.uint8)
    return image, np.rint(a * 255).astype(np.uint8)


def test_cutout_is_rgb_plus_mask_as_alpha():
    rgb = _rgb(5, 7, 0)
    alpha = np.random.default_rng(1).integers(0, 256, (5, 7), dtype=np.uint8)
    out = make_cutout(rgb, alpha)
    assert out.shape == (5, 7, 4)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :3], rgb)
    np.testing.assert_array_equal(out[..., 3], alpha)


def test_refined_cutout_keeps_the_mask_as_alpha():
    rgb, alpha = _composite()
    out = make_cutout(rgb, alpha, refine_foreground=True)
    assert out.shape == (*alpha.shape, 4)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 3], alpha)


@pytest.mark.parametrize("mask_shape", [(5, 8), (6, 7), (7, 5)])
def test_cutout_size_mismatch_raises(mask_shape):
    with pytest.raises(ValueError, match="differ"):
        make_cutout(_rgb(5, 7, 0), np.zeros(mask_shape, np.uint8))


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_box_blur_2d_equals_brute_force_mirror_mean(radius):
    image = np.random.default_rng(radius).random((7, 9)).astype(np.float32)
    out = box_blur(image, radius)
    assert out.dtype == np.float32
    assert out.shape == image.shape
    np.testing.assert_allclose(out, _brute_force_blur(image, radius), atol=1e-5)


def test_box_blur_is_per_channel_for_colour_images():
    image = _rgb(6, 8, 3)
    out = box_blur(image, 2)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, _brute_force_blur(image, 2), atol=1e-3)


def test_box_blur_radius_zero_is_identity():
    image = np.random.default_rng(4).random((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(box_blur(image, 0), image)


@pytest.mark.parametrize("alpha_value", [np.uint8(255), np.float32(1.0)])
def test_opaque_alpha_returns_the_image(alpha_value):
    rgb = _rgb(20, 24, 5)
    alpha = np.full((20, 24), alpha_value)
    out = estimate_foreground(rgb, alpha)
    assert out.dtype == np.uint8
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 1


def test_soft_edge_colours_move_toward_the_true_foreground():
    image, alpha = _composite()
    out = estimate_foreground(image, alpha)
    edge = (alpha > 0) & (alpha < 255)
    assert edge.sum() > 100
    raw_error = np.abs(image[edge].astype(float) - FOREGROUND).sum(axis=-1)
    est_error = np.abs(out[edge].astype(float) - FOREGROUND).sum(axis=-1)
    assert (est_error < raw_error).all()
    assert est_error.mean() < 0.25 * raw_error.mean()
    opaque = alpha == 255
    assert np.abs(out[opaque].astype(float) - FOREGROUND).max() <= 2

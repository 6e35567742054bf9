"""Image -> network input: pixel-type conversion, working sizes, resizing and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from birefnet_core.preprocessing import (
    DYNAMIC_MAX_SIDE,
    normalize_batch,
    prepare_image,
    prepare_image_from_chw,
    to_rgb_uint8,
    working_size,
)
from birefnet_core.size import Size
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD, get_variant

GREY = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20  # 0, 20, ..., 220


def _assert_rgb_of(out: np.ndarray, expected: np.ndarray) -> None:
    """`out` is contiguous H x W x 3 uint8 equal to `expected` (H x W grey or H x W x 3)."""
    if expected.ndim == 2:
        expected = np.repeat(expected[..., None], 3, axis=2)
    assert out.dtype == np.uint8
    assert out.shape == expected.shape
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    channels = [127 + 120 * np.sin(xx / 9.0), 127 + 120 * np.cos(yy / 7.0), 60 + yy + xx / 2]
    return np.clip(np.dstack(channels), 0, 255).astype(np.uint8)


# --- normalize_batch ---------------------------------------------------------------------------


def _reference_normalisation(pixels: np.ndarray, mean, std) -> np.ndarray:
    x = pixels.astype(np.float64) / 255.0
    x = (x - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    return x.transpose(0, 3, 1, 2)


def test_normalize_batch_matches_float64_reference():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    out = normalize_batch(torch.from_numpy(pixels), IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (2, 3, 5, 7)
    assert out.dtype == torch.float32
    assert out.is_contiguous()
    np.testing.assert_allclose(
        out.numpy(), _reference_normalisation(pixels, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=1e-5
    )


def test_normalize_batch_uses_the_given_mean_and_std():
    pixels = np.random.default_rng(1).integers(0, 256, (1, 4, 3, 3), dtype=np.uint8)
    mean, std = (0.5, 0.25, 0.0), (0.5, 2.0, 1.0)
    out = normalize_batch(torch.from_numpy(pixels), mean, std)
    np.testing.assert_allclose(out.numpy(), _reference_normalisation(pixels, mean, std), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float64, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 3e-2)]
)
def test_normalize_batch_returns_the_requested_dtype(dtype, atol):
    pixels = np.random.default_rng(2).integers(0, 256, (3, 4, 6, 3), dtype=np.uint8)
    out = normalize_batch(torch.from_numpy(pixels), IMAGENET_MEAN, IMAGENET_STD, dtype=dtype)
    assert out.dtype == dtype
    assert out.shape == (3, 3, 4, 6)
    assert out.is_contiguous()
    expected = _reference_normalisation(pixels, IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=0, atol=atol)


def test_normalize_batch_does_not_modify_its_input():
    pixels = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (1, 2, 2, 3), dtype=np.uint8))
    before = pixels.clone()
    normalize_batch(pixels, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(pixels, before)


# --- to_rgb_uint8: arrays ----------------------------------------------------------------------


def test_grey_uint8_is_repeated_to_three_channels():
    _assert_rgb_of(to_rgb_uint8(GREY), GREY)


def test_single_channel_uint8_is_repeated():
    _assert_rgb_of(to_rgb_uint8(GREY[..., None]), GREY)


def test_rgb_uint8_is_unchanged():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    _assert_rgb_of(to_rgb_uint8(rgb), rgb)


def test_rgba_drops_alpha():
    rgba = np.random.default_rng(1).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    _assert_rgb_of(to_rgb_uint8(rgba), rgba[..., :3])


def test_non_contiguous_input_gives_contiguous_output():
    rgb = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    _assert_rgb_of(to_rgb_uint8(rgb[:, ::2]), rgb[:, ::2])


def test_bool_mask_becomes_0_or_255():
    mask = np.array([[True, False], [False, True]])
    _assert_rgb_of(to_rgb_uint8(mask), np.array([[255, 0], [0, 255]], np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_in_unit_range_is_scaled(dtype):
    levels = np.array([[0, 1, 127, 128], [200, 254, 255, 255]], np.float64)
    floats = (levels / 255).astype(dtype)
    _assert_rgb_of(to_rgb_uint8(floats), levels.astype(np.uint8))


def test_float_outside_unit_range_and_nan_are_clipped():
    floats = np.array([[-0.5, 1.5, np.nan, np.inf]], np.float32)
    _assert_rgb_of(to_rgb_uint8(floats), np.array([[0, 255, 0, 255]], np.uint8))


def test_uint16_is_scaled_not_clipped():
    k = np.array([[0, 1, 77, 128], [200, 254, 255, 3]], np.uint16)
    _assert_rgb_of(to_rgb_uint8(k * 257), k.astype(np.uint8))
    _assert_rgb_of(to_rgb_uint8(np.full((2, 2), 65535, np.uint16)), np.full((2, 2), 255, np.uint8))


def test_uint16_colour_is_scaled_per_channel():
    k = np.random.default_rng(3).integers(0, 256, (4, 5, 3)).astype(np.uint16)
    _assert_rgb_of(to_rgb_uint8(k * 257), k.astype(np.uint8))


def test_int32_with_16_bit_range_is_scaled():
    values = np.array([[0, 257, 257 * 77, 65535], [300, 1000, 40000, 65534]], np.int32)
    expected = np.rint(values / 257.0).astype(np.uint8)  # v * 255 / 65535 == v / 257
    assert expected[0].tolist() == [0, 1, 77, 255]
    _assert_rgb_of(to_rgb_uint8(values), expected)


def test_int32_with_8_bit_range_is_unchanged():
    _assert_rgb_of(to_rgb_uint8(GREY.astype(np.int32)), GREY)


def test_uint16_and_int32_holding_the_same_16_bit_data_agree():
    values = np.array([[200, 300, 1000, 40000, 65534]], np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(values), to_rgb_uint8(values.astype(np.int32)))


@pytest.mark.parametrize(
    ("shape", "error"), [((4, 5, 2), ValueError), ((4,), ValueError), ((0, 5), ValueError)]
)
def test_unreadable_shapes_raise(shape, error):
    with pytest.raises(error):
        to_rgb_uint8(np.zeros(shape, np.uint8))


def test_unsupported_pixel_type_raises():
    with pytest.raises(TypeError, match="complex"):
        to_rgb_uint8(np.zeros((2, 2), np.complex64))


# --- to_rgb_uint8: PIL images ------------------------------------------------------------------


def test_pil_la_drops_alpha():
    image = Image.fromarray(np.dstack([GREY, 255 - GREY]), "LA")
    assert image.mode == "LA"
    _assert_rgb_of(to_rgb_uint8(image), GREY)


def test_pil_ycbcr_grey_stays_grey():
    image = Image.fromarray(np.dstack([GREY] * 3)).convert("YCbCr")
    assert image.mode == "YCbCr"
    out = to_rgb_uint8(image)
    assert out.shape == (*GREY.shape, 3) and out.dtype == np.uint8
    assert (out == out[..., :1]).all()
    assert np.abs(out[..., 0].astype(int) - GREY).max() <= 1  # Pillow's YCbCr round trip is off by one


def test_pil_ycbcr_colour_is_converted_to_rgb():
    rgb = _smooth_rgb(6, 9)
    image = Image.fromarray(rgb).convert("YCbCr")
    out = to_rgb_uint8(image)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3  # YCbCr is lossy by a level or two
    assert out[..., 0].std() > 10  # colour, not the luma repeated


def test_pil_float_mode_keeps_the_0_to_255_range_like_the_reference():
    image = Image.fromarray(GREY, "L").convert("F")  # what Pillow's own conversion produces
    assert image.mode == "F"
    _assert_rgb_of(to_rgb_uint8(image), GREY)
    _assert_rgb_of(to_rgb_uint8(image), np.asarray(image.convert("RGB"))[..., 0])


def test_pil_int_mode_with_16_bit_data_is_scaled():
    image = Image.fromarray(GREY.astype(np.int32) * 257, "I")
    assert image.mode == "I"
    _assert_rgb_of(to_rgb_uint8(image), GREY)


def test_pil_int_mode_with_8_bit_data_is_unchanged():
    image = Image.fromarray(GREY).convert("I")
    assert image.mode == "I"
    _assert_rgb_of(to_rgb_uint8(image), GREY)


def test_pil_16_bit_mode_is_scaled():
    image = Image.fromarray(GREY.astype(np.uint16) * 257)
    assert image.mode.startswith("I;16")
    _assert_rgb_of(to_rgb_uint8(image), GREY)


def test_pil_rgba_and_palette_modes():
    rgb = _smooth_rgb(5, 7)
    rgba = Image.fromarray(np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)]), "RGBA")
    _assert_rgb_of(to_rgb_uint8(rgba), rgb)
    grey_palette = Image.fromarray(GREY).convert("P")
    _assert_rgb_of(to_rgb_uint8(grey_palette), np.asarray(grey_palette.convert("RGB")))


# --- working_size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "expected"), [("lite", (1024, 1024)), ("hr", (2048, 2048)), ("lite-2k", (1440, 2560))]
)
def test_fixed_variant_uses_its_trained_size_as_height_width(variant, expected):
    assert working_size(get_variant(variant), 123, 456) == expected


@pytest.mark.parametrize("variant", [None, "lite", "dynamic"])
def test_explicit_size_overrides_the_variant(variant):
    v = get_variant(variant) if variant else None
    out = working_size(v, 500, 300, size=Size(height=64, width=96))
    assert out == Size(height=64, width=96) and isinstance(out, Size)


@pytest.mark.parametrize("size", [Size(64, 100), Size(33, 64), Size(16, 16)])
def test_size_not_a_multiple_of_32_raises(size):
    with pytest.raises(ValueError, match="multiple of 32"):
        working_size(None, 100, 100, size=size)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (100, 150, (96, 160)),  # 3.125 -> 3, 4.6875 -> 5 blocks of 32
        (64, 64, (64, 64)),
        (95, 97, (96, 96)),
        (10, 700, (32, 704)),  # at least one block of 32
        (5, 5, (32, 32)),
        (1, 1, (32, 32)),
        (2304, 2304, (2304, 2304)),
        (2304, 4608, (1152, 2304)),  # longest side capped at DYNAMIC_MAX_SIDE, aspect kept
        (3000, 2000, (2304, 1536)),
        (1000, 4000, (576, 2304)),
    ],
)
@pytest.mark.parametrize("variant", ["dynamic", None])
def test_dynamic_size_rounds_to_32_with_a_cap(height, width, expected, variant):
    v = get_variant(variant) if variant else None
    out = working_size(v, height, width)
    assert out == expected
    assert out[0] % 32 == 0 and out[1] % 32 == 0
    assert max(out) <= DYNAMIC_MAX_SIDE


# --- prepare_image -----------------------------------------------------------------------------


def test_prepare_image_right_size_is_unchanged():
    rgb = _smooth_rgb(32, 64)
    out = prepare_image(rgb, Size(32, 64))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("size", [Size(30, 45), Size(17, 23), Size(32, 32)])
def test_prepare_image_downscale_matches_pil_bilinear(size):
    rgb = _smooth_rgb(60, 90)
    out = prepare_image(rgb, size)
    assert out.shape == (*size, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    pil = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    assert np.abs(out.astype(int) - pil.astype(int)).max() <= 2


@pytest.mark.parametrize("size", [Size(100, 90), Size(64, 128)])
def test_prepare_image_upscale_matches_pil_bilinear(size):
    rgb = _smooth_rgb(40, 50)
    out = prepare_image(rgb, size)
    pil = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    assert np.abs(out.astype(int) - pil.astype(int)).max() <= 2


def test_prepare_image_accepts_a_read_only_decoded_buffer():
    image = Image.fromarray(_smooth_rgb(40, 50))
    rgb = np.asarray(image)
    assert not rgb.flags.writeable
    before = rgb.copy()
    out = prepare_image(rgb, Size(32, 32))
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(rgb, before)


@pytest.mark.parametrize("size", [Size(30, 45), Size(100, 90), Size(40, 50)])
def test_prepare_image_from_chw_equals_prepare_image(size):
    rgb = _smooth_rgb(40, 50)
    out = prepare_image_from_chw(torch.from_numpy(rgb).permute(2, 0, 1), size)
    assert out.shape == (*size, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, prepare_image(rgb, size))

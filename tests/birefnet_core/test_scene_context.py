"""Whole-scene context: resampling weights, the strip-built view, windowed upsampling, fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from birefnet_core.preprocessing import prepare_image
from birefnet_core.scene_context import (
    ContextView,
    coarse_window,
    context_view,
    fuse_context,
    resample_weights,
    upsample_window,
)
from birefnet_core.size import Size
from birefnet_core.tiling import TilingOptions, predict_tiled
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD

SIZE_PAIRS = [
    (37, 11),
    (11, 37),
    (100, 64),
    (64, 100),
    (5, 5),
    (1, 7),
    (7, 1),
    (333, 96),
    (96, 333),
    (48, 32),
]


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    channels = [127 + 120 * np.sin(y / 17 + c) * np.cos(x / 23) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def torch_resize(values: np.ndarray, size: tuple[int, int], antialias: bool = True) -> np.ndarray:
    """float64 H x W (x C) -> `size` with F.interpolate, bilinear, align_corners=False."""
    tensor = torch.from_numpy(values.astype(np.float64))
    tensor = tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]
    return out[0].numpy() if values.ndim == 2 else out.permute(1, 2, 0).numpy()


# --- resample_weights ----------------------------------------------------------------------------


@pytest.mark.parametrize(("in_size", "out_size"), SIZE_PAIRS)
def test_weights_are_torch_antialiased_bilinear(in_size: int, out_size: int) -> None:
    # Resizing the identity along one axis gives the weight matrix torch uses.
    expected = torch_resize(np.eye(in_size), (out_size, in_size))
    weights = resample_weights(in_size, out_size)
    assert weights.shape == (out_size, in_size) and weights.dtype == np.float64
    np.testing.assert_allclose(weights.toarray(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(weights.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert (weights.data > 0).all(), "exact zeros are dropped"


@pytest.mark.parametrize(("in_size", "out_size"), [(p, q) for p, q in SIZE_PAIRS if q > p])
def test_enlarging_weights_are_plain_clamped_bilinear(in_size: int, out_size: int) -> None:
    plain = torch_resize(np.eye(in_size), (out_size, in_size), antialias=False)
    np.testing.assert_allclose(resample_weights(in_size, out_size).toarray(), plain, atol=1e-12)
    # By hand: source x = (i + 0.5) * in / out - 0.5, clamped to [0, in - 1], split between floor and ceil.
    src = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    by_hand = np.zeros((out_size, in_size))
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    np.add.at(by_hand, (np.arange(out_size), low), 1 - (src - low))
    np.add.at(by_hand, (np.arange(out_size), high), src - low)
    np.testing.assert_allclose(resample_weights(in_size, out_size).toarray(), by_hand, atol=1e-12)


def test_weights_are_cached_and_reject_bad_sizes() -> None:
    assert resample_weights(123, 45) is resample_weights(123, 45)
    with pytest.raises(ValueError, match="positive"):
        resample_weights(0, 5)


# --- ContextView / context_view -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size"), [((150, 233), Size(64, 64)), ((97, 131), Size(32, 40)), ((40, 30), Size(96, 96))]
)
def test_view_is_the_rounded_float_resize(shape: tuple[int, int], size: Size) -> None:
    # Every byte is the float64 resize rounded to nearest. Exact ties (x.5, which bilinear
    # weights can produce) may round either way, since torch sums in another order.
    image = noise_image(*shape, seed=4)
    exact = torch_resize(image, tuple(size))
    assert np.abs(context_view(image, size) - exact).max() <= 0.5 + 1e-9


@pytest.mark.parametrize(
    "image", [noise_image(150, 233), smooth_image(301, 199), noise_image(64, 64, seed=2)]
)
@pytest.mark.parametrize("size", [Size(64, 64), Size(96, 96), Size(32, 48)])
def test_view_is_within_one_level_of_prepare_image(image: np.ndarray, size: Size) -> None:
    # Measured max difference: exactly 1 level (in 5-27 % of pixels), because torch's uint8
    # kernel uses int16 weights and rounds to uint8 between the horizontal and vertical passes.
    difference = np.abs(context_view(image, size).astype(int) - prepare_image(image, size).astype(int))
    assert difference.max() <= 1


def test_view_of_an_image_at_the_view_size_is_the_image() -> None:
    image = noise_image(48, 40)
    np.testing.assert_array_equal(context_view(image, Size(48, 40)), image)


def strip_bounds(height: int, rng: np.random.Generator) -> list[list[tuple[int, int]]]:
    cuts = np.sort(rng.choice(np.arange(1, height), size=6, replace=False))
    random_strips = list(zip([0, *cuts], [*cuts, height], strict=True))
    rng.shuffle(random_strips)
    return [
        [(0, height)],
        [(y, y + 1) for y in range(height)][::-1],
        [(y, min(y + 16, height)) for y in range(0, height, 16)],
        random_strips,
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_strip_splitting_gives_the_same_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(40, 200)), int(rng.integers(40, 200))
    image = noise_image(height, width, seed=seed)
    size = Size(int(rng.integers(8, 64)), int(rng.integers(8, 64)))
    whole = context_view(image, size)
    assert whole.shape == (*size, 3) and whole.dtype == np.uint8
    for strips in strip_bounds(height, rng):
        view = ContextView(height, width, size)
        for y0, y1 in strips:
            view.add_rows(y0, image[y0:y1])
        assert view.rows_added == height
        np.testing.assert_array_equal(view.result(), whole)


def test_view_rejects_bad_strips_and_missing_rows() -> None:
    image = noise_image(20, 12)
    view = ContextView(20, 12, Size(8, 8))
    with pytest.raises(ValueError, match="h x 12 x 3 uint8"):
        view.add_rows(0, image[:, :11])
    with pytest.raises(ValueError, match="h x 12 x 3 uint8"):
        view.add_rows(0, image.astype(np.float32))
    with pytest.raises(ValueError, match="outside"):
        view.add_rows(-1, image[:4])
    with pytest.raises(ValueError, match="outside"):
        view.add_rows(18, image[:4])
    view.add_rows(0, image[:10])
    with pytest.raises(ValueError, match="already added"):
        view.add_rows(9, image[9:12])
    with pytest.raises(ValueError, match="10 of 20 image rows were never added"):
        view.result()
    view.add_rows(10, image[10:])
    np.testing.assert_array_equal(view.result(), context_view(image, Size(8, 8)))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        context_view(image[..., 0], Size(8, 8))


# --- coarse_window / upsample_window -------------------------------------------------------------

UPSAMPLE_CASES = [(Size(16, 16), Size(150, 233)), (Size(24, 20), Size(97, 53)), (Size(40, 40), Size(30, 25))]
WINDOWS = [(0, 0, 10, 10), (0, 0, 1, 1), (5, 7, 27, 22), (20, 11, 21, 12), ("end", 7), ("full",)]


def resolve(window: tuple, full: Size) -> tuple[int, int, int, int]:
    if window[0] == "full":
        return 0, 0, full.height, full.width
    if window[0] == "end":
        return full.height - window[1], full.width - window[1], full.height, full.width
    return window


@pytest.mark.parametrize(("coarse", "full"), UPSAMPLE_CASES)
def test_whole_map_matches_torch(coarse: Size, full: Size) -> None:
    probs = np.random.default_rng(5).random(coarse, dtype=np.float32)
    result = upsample_window(probs, (0, 0), coarse, full, (0, 0, *full))
    assert result.dtype == np.float32 and result.shape == full
    np.testing.assert_allclose(result, torch_resize(probs, full, antialias=True), atol=1e-5)
    if full.height > coarse.height and full.width > coarse.width:
        plain = F.interpolate(
            torch.from_numpy(probs)[None, None], size=full, mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(result, plain[0, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize(("coarse", "full"), UPSAMPLE_CASES)
@pytest.mark.parametrize("window", WINDOWS)
def test_window_from_its_coarse_patch_equals_the_whole_map_slice(
    coarse: Size, full: Size, window: tuple
) -> None:
    y0, x0, y1, x1 = resolve(window, full)
    probs = np.random.default_rng(6).random(coarse, dtype=np.float32)
    whole = upsample_window(probs, (0, 0), coarse, full, (0, 0, *full))
    cy0, cx0, cy1, cx1 = coarse_window(coarse, full, (y0, x0, y1, x1))
    patch = probs[cy0:cy1, cx0:cx1]
    windowed = upsample_window(patch, (cy0, cx0), coarse, full, (y0, x0, y1, x1))
    np.testing.assert_allclose(windowed, whole[y0:y1, x0:x1], rtol=0, atol=1e-6)
    # A patch one row or column short on any side misses pixels the window reads.
    for short in [
        (cy0 + 1, cx0, cy1, cx1),
        (cy0, cx0 + 1, cy1, cx1),
        (cy0, cx0, cy1 - 1, cx1),
        (cy0, cx0, cy1, cx1 - 1),
    ]:
        with pytest.raises(ValueError, match="reads"):
            upsample_window(
                probs[short[0] : short[2], short[1] : short[3]], short[:2], coarse, full, (y0, x0, y1, x1)
            )


@pytest.mark.parametrize(("coarse", "full"), UPSAMPLE_CASES)
@pytest.mark.parametrize("window", WINDOWS)
def test_coarse_window_is_exactly_the_pixels_with_weight(coarse: Size, full: Size, window: tuple) -> None:
    y0, x0, y1, x1 = resolve(window, full)
    rows = np.flatnonzero(resample_weights(coarse.height, full.height).toarray()[y0:y1].any(axis=0))
    cols = np.flatnonzero(resample_weights(coarse.width, full.width).toarray()[x0:x1].any(axis=0))
    assert coarse_window(coarse, full, (y0, x0, y1, x1)) == (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    # The span is contiguous, so the half-open window holds nothing the resize does not read.
    assert len(rows) == rows[-1] + 1 - rows[0] and len(cols) == cols[-1] + 1 - cols[0]


def test_windows_reject_bad_arguments() -> None:
    coarse, full = Size(8, 8), Size(32, 32)
    probs = np.zeros(coarse, np.float32)
    for window in [(0, 0, 0, 5), (0, 0, 33, 5), (-1, 0, 4, 4)]:
        with pytest.raises(ValueError, match="window"):
            coarse_window(coarse, full, window)
    with pytest.raises(ValueError, match="not inside"):
        upsample_window(probs, (1, 0), coarse, full, (0, 0, 4, 4))
    with pytest.raises(ValueError, match="2-D"):
        upsample_window(probs[None], (0, 0), coarse, full, (0, 0, 4, 4))


# --- fuse_context and the chunked pipeline ------------------------------------------------------


def test_fuse_context_leans_on_coarse_only_where_tiles_are_unsure() -> None:
    tiles = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    fused = fuse_context(tiles.copy(), np.ones(4, np.float32), 0.6)
    w = 0.6 * (1 - np.abs(2 * tiles - 1))
    np.testing.assert_allclose(fused, (1 - w) * tiles + w, atol=1e-7)
    unchanged = tiles.copy()
    assert fuse_context(unchanged, np.ones(4, np.float32), 0.0) is unchanged
    np.testing.assert_array_equal(unchanged, tiles)


def grey(batch: torch.Tensor) -> torch.Tensor:
    """Pointwise stand-in network: the de-normalised grey level as probability."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch * std + mean).mean(dim=1, keepdim=True)


def test_strip_and_window_pipeline_reproduces_predict_tiled() -> None:
    # What a scene job does: view from strips, one coarse prediction, each chunk fused from its
    # own coarse patch. It must match the in-memory coarse-to-fine result.
    image = smooth_image(150, 233)
    height, width = image.shape[:2]
    context = Size(48, 48)
    fused = predict_tiled(image, grey, TilingOptions(64, 16, 4, context_size=48, context_weight=0.7))
    tiles = predict_tiled(image, grey, TilingOptions(64, 16, 4)).probabilities

    view = ContextView(height, width, context)
    for y0 in range(0, height, 37):
        view.add_rows(y0, image[y0 : y0 + 37])
    coarse = grey(
        torch.from_numpy((view.result() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
        .permute(2, 0, 1)[None]
        .float()
    )
    coarse = coarse[0, 0].numpy()
    for y0, x0, y1, x1 in [(0, 0, 60, 100), (60, 0, 150, 100), (0, 100, 150, 233)]:
        cy0, cx0, cy1, cx1 = coarse_window(context, Size(height, width), (y0, x0, y1, x1))
        chunk = upsample_window(
            coarse[cy0:cy1, cx0:cx1], (cy0, cx0), context, Size(height, width), (y0, x0, y1, x1)
        )
        chunk_fused = fuse_context(tiles[y0:y1, x0:x1].copy(), chunk, 0.7)
        np.testing.assert_allclose(chunk_fused, fused.probabilities[y0:y1, x0:x1], atol=1e-5)

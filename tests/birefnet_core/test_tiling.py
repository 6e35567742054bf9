"""Tiled inference: the tile plan, blending weights, seam score and agreement with untiled runs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from birefnet_core.tiling import (
    Tile,
    TileAccumulator,
    TilingOptions,
    blend_tiles,
    blend_weights,
    count_tiles,
    plan_tiles,
    predict_tiled,
    tile_weights,
)
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD

BLUR_RADIUS = 2
_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def blur_grey(batch: torch.Tensor) -> torch.Tensor:
    """Translation-equivariant stand-in network: 5 x 5 box blur of the de-normalised grey image.

    Replicate padding makes it inexact within BLUR_RADIUS pixels of a tile edge, which is what
    blending has to hide at interior edges (and what it must keep at image borders).
    """
    grey = (batch * _STD + _MEAN).mean(dim=1, keepdim=True)
    size = 2 * BLUR_RADIUS + 1
    padded = F.pad(grey, (BLUR_RADIUS,) * 4, mode="replicate")
    return F.conv2d(padded, torch.full((1, 1, size, size), 1.0 / size**2))


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Full-contrast noise: the worst case for tile-edge errors of the stand-in."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def constant_fn(value: float):
    return lambda batch: torch.full((batch.shape[0], 1, *batch.shape[2:]), value)


def tiled_probabilities(image: np.ndarray, predict_fn, *args, **kwargs) -> np.ndarray:
    """`predict_tiled`'s map alone, for tests that only look at the probabilities."""
    return predict_tiled(image, predict_fn, TilingOptions(*args, **kwargs)).probabilities


# --- plan_tiles / count_tiles ----------------------------------------------------------------

PLAN_CASES = [
    (h, w, tile, overlap)
    for h, w in [(1, 1), (7, 300), (64, 64), (65, 63), (150, 233), (301, 199), (512, 512)]
    for tile, overlap in [(1, 0), (8, 0), (8, 7), (32, 8), (64, 0), (64, 16), (96, 32), (128, 48), (400, 100)]
    if h * w // (tile - overlap) ** 2 < 5000  # keep the slow tiny-stride plans small
]


@pytest.mark.parametrize(("height", "width", "tile_size", "overlap"), PLAN_CASES)
def test_plan_covers_image_with_flush_tiles(height: int, width: int, tile_size: int, overlap: int) -> None:
    plan = plan_tiles(height, width, tile_size, overlap)
    assert len(plan) == count_tiles(height, width, tile_size, overlap)
    tile_h, tile_w = min(tile_size, height), min(tile_size, width)
    coverage = np.zeros((height, width), dtype=np.int32)
    for tile in plan:
        assert (tile.height, tile.width) == (tile_h, tile_w)
        assert tile.y0 >= 0 and tile.x0 >= 0 and tile.y1 <= height and tile.x1 <= width
        coverage[tile.slices] += 1
    assert coverage.min() >= 1

    stride = tile_size - overlap
    for n, size, starts in [
        (height, tile_h, sorted({t.y0 for t in plan})),
        (width, tile_w, sorted({t.x0 for t in plan})),
    ]:
        # Regular stride, the last tile pulled back to end on the edge.
        assert starts == [min(i * stride, n - size) for i in range(len(starts))]
        assert starts[-1] + size == n
    assert plan == sorted(plan, key=lambda t: (t.y0, t.x0)), "row-major order"


def test_count_tiles_formula_over_many_sizes() -> None:
    for n, tile, overlap in itertools.product(range(1, 70), range(1, 20), range(0, 19)):
        if overlap >= tile:
            continue
        expected = max(1, int(np.ceil((n - overlap) / (tile - overlap))))
        assert count_tiles(n, 1, tile, overlap) == expected
        assert len(plan_tiles(n, 1, tile, overlap)) == expected


def test_small_image_is_one_tile_of_the_image_size() -> None:
    assert plan_tiles(50, 40, 64, 16) == [Tile(0, 0, 50, 40)]
    assert plan_tiles(50, 130, 64, 16) == [Tile(0, 0, 50, 64), Tile(0, 48, 50, 112), Tile(0, 66, 50, 130)]


def test_overlap_zero_tiles_abut() -> None:
    plan = plan_tiles(128, 128, 64, 0)
    assert plan == [Tile(0, 0, 64, 64), Tile(0, 64, 64, 128), Tile(64, 0, 128, 64), Tile(64, 64, 128, 128)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 10, 8, 2), "image size"),
        ((10, -1, 8, 2), "image size"),
        ((10, 10, 0, 0), "tile_size"),
        ((10, 10, 8, 8), "overlap"),
        ((10, 10, 8, -1), "overlap"),
    ],
)
def test_plan_rejects_bad_arguments(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tiles(*args)
    with pytest.raises(ValueError, match=message):
        count_tiles(*args)


# --- blending weights --------------------------------------------------------------------------


def test_weights_are_one_inside_symmetric_and_positive() -> None:
    weights = blend_weights(40, 50, 12)
    assert weights.dtype == np.float32 and weights.shape == (40, 50)
    assert (weights > 0).all() and weights.max() == 1.0
    np.testing.assert_array_equal(weights[12:-12, 12:-12], 1.0)
    np.testing.assert_allclose(weights, weights[::-1, :], atol=1e-7)
    np.testing.assert_allclose(weights, weights[:, ::-1], atol=1e-7)
    ramp = weights[:12, 25]
    assert (np.diff(ramp) > 0).all() and ramp[0] < 0.01


def test_opposite_ramps_sum_to_one_over_the_overlap() -> None:
    ramp = blend_weights(1, 40, 10, top=False, bottom=False)[0]
    np.testing.assert_allclose(ramp[:10] + ramp[-10:], 1.0, atol=1e-6)


def test_weights_without_overlap_are_all_ones() -> None:
    np.testing.assert_array_equal(blend_weights(7, 9, 0), 1.0)


def test_tile_weights_keep_full_weight_on_image_border_edges() -> None:
    height, width, overlap = 150, 233, 16
    for tile in plan_tiles(height, width, 64, overlap):
        weights = tile_weights(tile, height, width, overlap)
        assert (weights > 0).all()
        for on_border, edge in [
            (tile.y0 == 0, weights[0, overlap:-overlap]),
            (tile.y1 == height, weights[-1, overlap:-overlap]),
            (tile.x0 == 0, weights[overlap:-overlap, 0]),
            (tile.x1 == width, weights[overlap:-overlap, -1]),
        ]:
            assert (edge == 1.0).all() if on_border else (edge < 0.01).all()


def test_blend_weights_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tile size"):
        blend_weights(0, 5, 1)
    with pytest.raises(ValueError, match="overlap"):
        blend_weights(5, 5, -1)


def test_tile_weights_sum_to_at_least_one() -> None:
    # With overlap <= tile_size / 2 the blend's normaliser never drops below 1, so no pixel's
    # value hinges on one tile's tiny edge weight.
    height, width, tile_size, overlap = 150, 233, 64, 24
    total = np.zeros((height, width))
    for tile in plan_tiles(height, width, tile_size, overlap):
        total[tile.slices] += tile_weights(tile, height, width, overlap)
    assert total.min() >= 1.0 - 1e-6


# --- TileAccumulator -------------------------------------------------------------------------


def test_accumulator_blends_weighted_average_and_leaves_uncovered_at_zero() -> None:
    acc = TileAccumulator(4, 6)
    acc.add(Tile(0, 0, 4, 4), np.full((4, 4), 0.2, np.float32), np.full((4, 4), 1.0, np.float32))
    acc.add(Tile(0, 2, 4, 5), np.full((4, 3), 0.8, np.float32), np.full((4, 3), 3.0, np.float32))
    result = acc.result()
    assert result.dtype == np.float32
    np.testing.assert_allclose(result[:, :2], 0.2)
    np.testing.assert_allclose(result[:, 2:4], (0.2 + 3 * 0.8) / 4)
    np.testing.assert_allclose(result[:, 4], 0.8)
    np.testing.assert_array_equal(result[:, 5], 0.0)
    # Seam score: 8 pixels covered twice, each disagreeing by 0.6.
    assert acc.seam_disagreement() == pytest.approx(0.6)


def test_accumulator_rejects_bad_input() -> None:
    acc = TileAccumulator(4, 4)
    ones = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="inside"):
        acc.add(Tile(3, 3, 5, 5), ones, ones)
    with pytest.raises(ValueError, match="shape"):
        acc.add(Tile(0, 0, 2, 3), ones, ones)
    with pytest.raises(ValueError, match="> 0"):
        acc.add(Tile(0, 0, 2, 2), ones, np.zeros((2, 2), np.float32))


def test_seam_score_is_zero_without_overlap() -> None:
    acc = TileAccumulator(2, 4)
    acc.add(Tile(0, 0, 2, 2), np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32))
    acc.add(Tile(0, 2, 2, 4), np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))
    assert acc.seam_disagreement() == 0.0


def test_blend_tiles_equals_adding_each_tile_with_its_weights() -> None:
    height, width, overlap = 150, 233, 16
    plan = plan_tiles(height, width, 64, overlap)
    rng = np.random.default_rng(3)
    predictions = [(tile, rng.random((tile.height, tile.width), dtype=np.float32)) for tile in plan]
    by_hand = TileAccumulator(height, width)
    for tile, probs in predictions:
        by_hand.add(tile, probs, tile_weights(tile, height, width, overlap))
    blended = blend_tiles(height, width, overlap, iter(predictions))
    np.testing.assert_array_equal(blended.result(), by_hand.result())
    assert blended.seam_totals() == by_hand.seam_totals()


# --- predict_tiled: acceptance against the untiled prediction -------------------------------


@pytest.mark.parametrize(("height", "width"), [(150, 233), (301, 199), (50, 233)])
@pytest.mark.parametrize(("tile_size", "overlap"), [(64, 16), (96, 32), (128, 48)])
def test_tiled_matches_untiled_prediction(height: int, width: int, tile_size: int, overlap: int) -> None:
    image = noise_image(height, width)
    tiled = tiled_probabilities(image, blur_grey, tile_size, overlap, batch_size=4)
    untiled = tiled_probabilities(image, blur_grey, max(height, width), 0, batch_size=1)
    assert tiled.shape == (height, width) and tiled.dtype == np.float32
    assert np.abs(tiled - untiled).max() <= 2 / 255


def test_untiled_reference_is_the_plain_prediction() -> None:
    image = noise_image(40, 30)
    whole = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    expected = blur_grey((whole - _MEAN) / _STD)[0, 0].numpy()
    np.testing.assert_allclose(tiled_probabilities(image, blur_grey, 64, 16, 1), expected, atol=1e-6)


def test_tiles_without_blending_would_fail_the_acceptance() -> None:
    # Guards the acceptance test's power: abutting tiles show the stand-in's edge errors.
    image = noise_image(150, 233)
    tiled = tiled_probabilities(image, blur_grey, 64, 0, batch_size=4)
    untiled = tiled_probabilities(image, blur_grey, 233, 0, batch_size=1)
    assert np.abs(tiled - untiled).max() > 10 / 255


def test_batch_size_does_not_change_the_result() -> None:
    image = noise_image(150, 233, seed=1)
    results = [tiled_probabilities(image, blur_grey, 64, 16, batch_size=b) for b in (1, 3, 7, 100)]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-6)


def test_predict_fn_sees_uniform_batches_and_may_return_numpy() -> None:
    shapes: list[tuple[int, ...]] = []

    def numpy_fn(batch: torch.Tensor) -> np.ndarray:
        shapes.append(tuple(batch.shape))
        assert batch.dtype == torch.float32
        return np.full((batch.shape[0], 1, *batch.shape[2:]), 0.25, np.float32)

    result = predict_tiled(noise_image(50, 130), numpy_fn, TilingOptions(64, 16, batch_size=2))
    assert shapes == [(2, 3, 50, 64), (1, 3, 50, 64)]
    assert result.tile_count == 3
    np.testing.assert_allclose(result.probabilities, 0.25)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": np.zeros((8, 8), np.uint8)}, "H x W x 3 uint8"),
        ({"image": np.zeros((8, 8, 3), np.float32)}, "H x W x 3 uint8"),
        ({"predict_fn": lambda b: torch.zeros(b.shape[0], b.shape[2], b.shape[3])}, "B x 1 x h x w"),
    ],
)
def test_predict_tiled_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"image": noise_image(8, 8), "predict_fn": constant_fn(0.5), "options": TilingOptions(8, 2, 1)}
    with pytest.raises(ValueError, match=message):
        predict_tiled(**(args | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 0, "overlap": 0}, "tile_size"),
        ({"overlap": 8}, "overlap"),
        ({"overlap": -1}, "overlap"),
        ({"batch_size": 0}, "batch_size"),
        ({"context_size": 0}, "context_size"),
        ({"context_size": 32, "context_weight": 1.5}, "context_weight"),
    ],
)
def test_tiling_options_reject_bad_values_when_made(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TilingOptions(**({"tile_size": 8, "overlap": 2, "batch_size": 1} | kwargs))


# --- seam score ----------------------------------------------------------------------------------


def test_seam_score_is_zero_for_a_constant_network() -> None:
    result = predict_tiled(noise_image(150, 233), constant_fn(0.7), TilingOptions(64, 16, batch_size=4))
    assert result.tile_count == count_tiles(150, 233, 64, 16)
    assert result.seam_disagreement == pytest.approx(0.0, abs=1e-7)


def test_seam_score_measures_per_tile_offsets() -> None:
    generator = torch.Generator().manual_seed(0)

    def offset_fn(batch: torch.Tensor) -> torch.Tensor:
        offsets = 0.2 * torch.rand(batch.shape[0], 1, 1, 1, generator=generator)
        return (blur_grey(batch) * 0.5 + offsets).clamp(0, 1)

    image = noise_image(150, 233)
    options = TilingOptions(64, 16, 4)
    assert predict_tiled(image, offset_fn, options).seam_disagreement > 0.01
    assert predict_tiled(image, blur_grey, options).seam_disagreement < 0.01


def test_seam_score_of_two_constant_tiles_is_their_difference() -> None:
    values = iter([0.2, 0.7])
    result = predict_tiled(noise_image(8, 12), lambda b: constant_fn(next(values))(b), TilingOptions(8, 4, 1))
    assert result.tile_count == 2
    assert result.seam_disagreement == pytest.approx(0.5)


# --- coarse-to-fine ------------------------------------------------------------------------------


def test_context_weight_zero_equals_plain_tiling() -> None:
    image = noise_image(150, 233)
    plain = tiled_probabilities(image, blur_grey, 64, 16, 4)
    fused = tiled_probabilities(image, blur_grey, 64, 16, 4, context_size=64, context_weight=0.0)
    np.testing.assert_array_equal(fused, plain)


def test_context_pass_runs_once_at_context_size_first() -> None:
    shapes: list[tuple[int, ...]] = []

    def recording_fn(batch: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(batch.shape))
        return blur_grey(batch)

    result = tiled_probabilities(noise_image(150, 233), recording_fn, 64, 16, 100, context_size=96)
    assert shapes[0] == (1, 3, 96, 96)
    assert shapes[1:] == [(count_tiles(150, 233, 64, 16), 3, 64, 64)]
    assert result.shape == (150, 233) and np.isfinite(result).all()


@pytest.mark.parametrize("tile_value", [0.0, 0.5, 1.0])
def test_context_fuses_only_where_tiles_are_unsure(tile_value: float) -> None:
    # The coarse pass (96 x 96 input) says 1.0 everywhere; tiles say tile_value.
    def fn(batch: torch.Tensor) -> torch.Tensor:
        return constant_fn(1.0 if batch.shape[-1] == 96 else tile_value)(batch)

    result = tiled_probabilities(noise_image(100, 140), fn, 64, 16, 4, context_size=96, context_weight=0.6)
    confidence = abs(2 * tile_value - 1)
    w = 0.6 * (1 - confidence)
    np.testing.assert_allclose(result, (1 - w) * tile_value + w * 1.0, atol=1e-6)

"""Seamless tiled inference for images far larger than the model's working size.

A satellite scene of tens of thousands of pixels a side cannot go through the network in one
piece, and shrinking it to the working size throws away the detail the mask needs. Instead the
image is cut into overlapping tiles of the working size (`plan_tiles`), each tile is predicted,
and the tile predictions are blended with weights that fall towards the tile edges
(`blend_weights`, `blend_tiles`), because a network is least reliable where its input was cut:
it cannot see across the cut. Edges lying on the image border are not cuts, so they keep full
weight. `predict_tiled` wires these together; an optional coarse pass over the whole image
(`TilingOptions.context_size`) gives back the global context that tiles lose, with the resize
and fusion maths of `scene_context`, which the scene path runs strip by strip and chunk by chunk.

Everything here works on pixel windows of in-memory arrays; reading scenes window by window,
CRS and affine maths belong to `connectors/`, and the scene path's chunk stages reuse
`plan_tiles` and `blend_tiles` so that chunked and in-memory tiling cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .preprocessing import normalize_batch
from .scene_context import context_view, fuse_context, upsample_window
from .size import Size
from .variants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "PredictFn",
    "Tile",
    "TileAccumulator",
    "TiledPrediction",
    "TilingOptions",
    "blend_tiles",
    "blend_weights",
    "count_tiles",
    "plan_tiles",
    "predict_tiled",
    "tile_weights",
]

#: Normalised B x 3 x h x w float32 batch -> B x 1 x h x w probabilities (tensor or array).
PredictFn = Callable[[torch.Tensor], torch.Tensor | np.ndarray]


@dataclass(frozen=True)
class Tile:
    """A pixel window of the image, half-open: rows y0 <= y < y1, columns x0 <= x < x1."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index an (H, W, ...) array with this to get the tile's pixels."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _check_tile_args(tile_size: int, overlap: int) -> None:
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile_size ({tile_size}), got {overlap}")


@dataclass(frozen=True)
class TilingOptions:
    """How `predict_tiled` cuts, batches and fuses; checked once, when made.

    `tile_size` is the side of the square tiles, `overlap` the pixels neighbouring tiles share,
    `batch_size` the tiles per call of the network; `context_size` and `context_weight` set the
    optional coarse pass (see `predict_tiled`).
    """

    tile_size: int
    overlap: int
    batch_size: int
    context_size: int | None = None
    context_weight: float = 0.5

    def __post_init__(self) -> None:
        _check_tile_args(self.tile_size, self.overlap)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.context_size is not None and self.context_size <= 0:
            raise ValueError(f"context_size must be positive, got {self.context_size}")
        if not 0.0 <= self.context_weight <= 1.0:
            raise ValueError(f"context_weight must be in [0, 1], got {self.context_weight}")


def _check_plan_args(height: int, width: int, tile_size: int, overlap: int) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    _check_tile_args(tile_size, overlap)


def _axis_count(n: int, tile_size: int, overlap: int) -> int:
    stride = tile_size - overlap
    return max(1, -(-(n - overlap) // stride))


def _axis_starts(n: int, tile_size: int, overlap: int) -> list[int]:
    # The last start is pulled back to n - size so the last tile ends on the edge instead of
    # running past it; it then overlaps its neighbour by more than `overlap`, never less.
    size = min(tile_size, n)
    stride = tile_size - overlap
    return [min(i * stride, n - size) for i in range(_axis_count(n, tile_size, overlap))]


def count_tiles(height: int, width: int, tile_size: int, overlap: int) -> int:
    """Number of tiles `plan_tiles` returns, without building the plan.

    Per axis of length n, with stride s = tile_size - overlap: max(1, ceil((n - overlap) / s)).
    That is the fewest starts 0, s, 2s, ... whose tiles reach the far edge: the k-th tile ends at
    (k - 1) * s + tile_size >= n  <=>  k >= (n - overlap) / s. The total is the product of both axes.
    """
    _check_plan_args(height, width, tile_size, overlap)
    return _axis_count(height, tile_size, overlap) * _axis_count(width, tile_size, overlap)


def plan_tiles(height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering a height x width image, in row-major order.

    Tiles start every stride = tile_size - overlap pixels and are exactly tile_size on a side,
    except on an axis shorter than a tile, where the single tile spans the whole axis. The last
    tile on each axis is shifted back to end flush with the image edge, so no tile reaches past
    the image and nothing needs padding. Every tile therefore has the same shape,
    (min(tile_size, height), min(tile_size, width)), which lets any run of tiles form a batch.
    """
    _check_plan_args(height, width, tile_size, overlap)
    tile_h, tile_w = min(tile_size, height), min(tile_size, width)
    return [
        Tile(y0, x0, y0 + tile_h, x0 + tile_w)
        for y0 in _axis_starts(height, tile_size, overlap)
        for x0 in _axis_starts(width, tile_size, overlap)
    ]


def _edge_profile(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    # Raised cosine at pixel centres: hann(t) = (1 - cos(pi * t)) / 2 with t = (i + 0.5) / overlap,
    # capped at t = 1. Sampling at centres keeps every weight above 0 and makes two ramps over
    # the same `overlap` pixels sum to exactly 1: hann(t) + hann(1 - t) = 1.
    profile = np.ones(n, dtype=np.float64)
    if overlap == 0:
        return profile
    i = np.arange(n, dtype=np.float64)
    if ramp_start:
        profile = np.minimum(profile, 0.5 - 0.5 * np.cos(np.pi * np.minimum((i + 0.5) / overlap, 1.0)))
    if ramp_end:
        profile = np.minimum(profile, 0.5 - 0.5 * np.cos(np.pi * np.minimum((n - i - 0.5) / overlap, 1.0)))
    return profile


def blend_weights(
    height: int,
    width: int,
    overlap: int,
    *,
    top: bool = True,
    bottom: bool = True,
    left: bool = True,
    right: bool = True,
) -> np.ndarray:
    """Blending weights for one tile, (height, width) float32, separable: w(y, x) = r(y) * c(x).

    Each profile is 1 in the interior and rises over `overlap` pixels from each ramped edge as
    hann((i + 0.5) / overlap), hann(t) = (1 - cos(pi * t)) / 2, i the distance to the edge. The
    weight is thus tiny (about (pi / (4 * overlap))^2) right at a cut, where the network saw the
    least context, and never 0, so the normaliser of the blend stays positive. A flag set to
    False leaves that edge unramped: edges on the image border are not cuts, and the one tile
    covering a border pixel must be trusted fully there.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"tile size must be positive, got {height} x {width}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    rows = _edge_profile(height, overlap, top, bottom)
    cols = _edge_profile(width, overlap, left, right)
    return np.outer(rows, cols).astype(np.float32)


def tile_weights(tile: Tile, height: int, width: int, overlap: int) -> np.ndarray:
    """`blend_weights` for a tile of a height x width image: ramps only on edges inside the image."""
    return blend_weights(
        tile.height,
        tile.width,
        overlap,
        top=tile.y0 > 0,
        bottom=tile.y1 < height,
        left=tile.x0 > 0,
        right=tile.x1 < width,
    )


class TileAccumulator:
    """Blends tile predictions into one map: p = sum_t(w_t * p_t) / sum_t(w_t), per pixel.

    Holds three float32 H x W buffers: weighted sum, sum of weights, and for each pixel the
    prediction of the first tile that covered it. Every later tile covering the pixel adds
    |p_later - p_first| to a running sum and 1 to a count; `seam_disagreement` is their ratio:
    how much tiles disagree where they overlap, before blending hides it. Where k tiles meet,
    this counts the k - 1 pairs that involve the first tile rather than all k * (k - 1) / 2
    pairs, which keeps memory at one buffer whatever k is.
    """

    def __init__(self, height: int, width: int) -> None:
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height} x {width}")
        self.height, self.width = height, width
        self._sum = np.zeros((height, width), dtype=np.float32)
        self._weight = np.zeros((height, width), dtype=np.float32)
        self._first = np.zeros((height, width), dtype=np.float32)
        self._seam_sum = 0.0
        self._seam_count = 0

    def add(self, tile: Tile, probs: np.ndarray, weights: np.ndarray) -> None:
        """Add one tile's (h, w) probabilities with its (h, w) blending weights (all > 0)."""
        if not (0 <= tile.y0 < tile.y1 <= self.height and 0 <= tile.x0 < tile.x1 <= self.width):
            raise ValueError(f"{tile} is not inside the {self.height} x {self.width} image")
        shape = (tile.height, tile.width)
        if probs.shape != shape or weights.shape != shape:
            raise ValueError(
                f"probs {probs.shape} and weights {weights.shape} must both have the tile's shape {shape}"
            )
        if not (weights > 0).all():
            # A zero weight would also hide from the seam tracking that the pixel was covered.
            raise ValueError("blending weights must be > 0")
        window = tile.slices
        seen = self._weight[window] > 0
        first = self._first[window]
        self._seam_sum += float(np.abs(probs[seen] - first[seen]).sum(dtype=np.float64))
        self._seam_count += int(seen.sum())
        np.copyto(first, probs, where=~seen)
        self._sum[window] += weights * probs
        self._weight[window] += weights

    def result(self) -> np.ndarray:
        """The blended (H, W) float32 map; pixels no tile covered read 0."""
        out = np.zeros_like(self._sum)
        np.divide(self._sum, self._weight, out=out, where=self._weight > 0)
        return out

    def seam_totals(self) -> tuple[float, int]:
        """(sum of |p_a - p_b|, number of pairs), for combining scores of several accumulators."""
        return self._seam_sum, self._seam_count

    def seam_disagreement(self) -> float:
        """Mean |p_a - p_b| over overlapping tile pairs (see the class docstring); 0.0 without overlap."""
        total, pairs = self.seam_totals()
        return total / pairs if pairs else 0.0


def blend_tiles(
    height: int, width: int, overlap: int, predictions: Iterable[tuple[Tile, np.ndarray]]
) -> TileAccumulator:
    """Blend (tile, probabilities) pairs of a height x width image, each weighted by `tile_weights`.

    Returns the accumulator, which holds the blended map and the seam score. `predictions` is
    consumed lazily, so tiles can be predicted batch by batch while they are blended.
    """
    accumulator = TileAccumulator(height, width)
    for tile, probs in predictions:
        accumulator.add(tile, probs, tile_weights(tile, height, width, overlap))
    return accumulator


@dataclass(frozen=True)
class TiledPrediction:
    """A tiled prediction with the numbers that say how it was made and how well tiles agreed."""

    probabilities: np.ndarray  # (H, W) float32
    tile_count: int
    seam_disagreement: float  # mean |p_a - p_b| where tiles overlap, before blending


def _predict_batch(
    predict_fn: PredictFn,
    pixels: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
) -> np.ndarray:
    """B x h x w x 3 uint8 -> B x h x w float32 probabilities; uint8 travels, the device normalises."""
    with torch.inference_mode():
        batch = normalize_batch(torch.from_numpy(pixels).to(device), tuple(mean), tuple(std))
        out = predict_fn(batch)
        probs = out.float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float32)
    expected = (pixels.shape[0], 1, *pixels.shape[1:3])
    if probs.shape != expected:
        raise ValueError(f"predict_fn returned shape {probs.shape}; expected B x 1 x h x w = {expected}")
    return probs[:, 0]


def _tile_predictions(
    image: np.ndarray,
    plan: list[Tile],
    predict_fn: PredictFn,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Each tile of `plan` with its probabilities, predicted `batch_size` tiles at a time."""
    for start in range(0, len(plan), batch_size):
        chunk = plan[start : start + batch_size]
        probs = _predict_batch(predict_fn, np.stack([image[t.slices] for t in chunk]), mean, std, device)
        yield from zip(chunk, probs, strict=True)


def predict_tiled(
    image: np.ndarray,
    predict_fn: PredictFn,
    options: TilingOptions,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str = "cpu",
) -> TiledPrediction:
    """(H, W, 3) uint8 image -> (H, W) float32 probabilities, predicted tile by tile and blended.

    Tiles follow `plan_tiles`; each batch of up to `options.batch_size` tiles is sent to
    `device` as uint8, normalised there with `normalize_batch` and passed to `predict_fn` under
    `torch.inference_mode()`. All tiles share one shape, so any batch is rectangular. The result
    matches an untiled prediction wherever the network's receptive field around a pixel fits in
    some tile, provided the overlap is at least twice the receptive radius: a tile's prediction
    is then exact wherever its neighbour's weight is not tiny. The tile count and the seam score
    (see `TileAccumulator`) come with it.

    Tiles alone lose global context: an object larger than a tile is seen in parts, and each
    part may look like background to the network. With `options.context_size`, the whole image
    is first resized to context_size x context_size (`context_view`: bilinear, antialiased, within
    one level of `prepare_image`, squashed like BiRefNet's training inputs), predicted once, and
    the coarse map resized back to H x W (`upsample_window` over the whole image). `fuse_context`
    blends it in where the tiles are unsure: p = (1 - w) * p_tiles + w * p_coarse,
    w = context_weight * (1 - c), with c = |2 * p_tiles - 1| the tiles' own confidence. A
    confident tile pixel (p near 0 or 1) keeps its sharp value; one near 0.5 leans on the global
    view by up to `context_weight`. The scene path computes the same view strip by strip
    (`ContextView`) and the same upsampled map window by window, so the two agree.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    plan = plan_tiles(height, width, options.tile_size, options.overlap)

    coarse = None
    if options.context_size is not None:
        context = Size(options.context_size, options.context_size)
        view = context_view(image, context)
        coarse_map = _predict_batch(predict_fn, view[None], mean, std, device)[0]
        coarse = upsample_window(coarse_map, (0, 0), context, Size(height, width), (0, 0, height, width))

    predictions = _tile_predictions(image, plan, predict_fn, options.batch_size, mean, std, device)
    accumulator = blend_tiles(height, width, options.overlap, predictions)
    probabilities = accumulator.result()
    if coarse is not None:
        probabilities = fuse_context(probabilities, coarse, options.context_weight)
    return TiledPrediction(probabilities, len(plan), accumulator.seam_disagreement())

"""Tile geometry and blending: where the tiles of an image go and how their predictions merge.

Plain NumPy, no torch: the scene path's CPU workers cut chunks into tiles and blend the model's
tile predictions back with these, and they should not pay a gigabyte of memory for importing
torch they never call. `tiling.predict_tiled` runs the same plan and blend on in-memory images,
so chunked and in-memory tiling cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Tile",
    "TileAccumulator",
    "axis_tile_count",
    "blend_tiles",
    "blend_weights",
    "check_tile_args",
    "count_tiles",
    "plan_tiles",
    "tile_weights",
]


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


def check_tile_args(tile_size: int, overlap: int) -> None:
    """Refuse a tile size or overlap that cannot tile anything."""
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile_size ({tile_size}), got {overlap}")


def _check_plan_args(height: int, width: int, tile_size: int, overlap: int) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    check_tile_args(tile_size, overlap)


def axis_tile_count(n: int, tile_size: int, overlap: int) -> int:
    """Tiles along one axis of n pixels (see `count_tiles`); chunk planning minimises their sum."""
    stride = tile_size - overlap
    return max(1, -(-(n - overlap) // stride))


def _axis_starts(n: int, tile_size: int, overlap: int) -> list[int]:
    # The last start is pulled back to n - size so the last tile ends on the edge instead of
    # running past it; it then overlaps its neighbour by more than `overlap`, never less.
    size = min(tile_size, n)
    stride = tile_size - overlap
    return [min(i * stride, n - size) for i in range(axis_tile_count(n, tile_size, overlap))]


def count_tiles(height: int, width: int, tile_size: int, overlap: int) -> int:
    """Number of tiles `plan_tiles` returns, without building the plan.

    Per axis of length n, with stride s = tile_size - overlap: max(1, ceil((n - overlap) / s)).
    That is the fewest starts 0, s, 2s, ... whose tiles reach the far edge: the k-th tile ends at
    (k - 1) * s + tile_size >= n  <=>  k >= (n - overlap) / s. The total is the product of both axes.
    """
    _check_plan_args(height, width, tile_size, overlap)
    return axis_tile_count(height, tile_size, overlap) * axis_tile_count(width, tile_size, overlap)


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

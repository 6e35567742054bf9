"""Whole-scene context for tiled inference, computed strip by strip and window by window.

Tiles lose global context, so `predict_tiled` also predicts the whole image shrunk to the
network's working size and fuses that coarse map back in where the tiles are unsure. A scene
far larger than memory cannot be shrunk in one piece, and its chunks are blended on different
workers, so both resizes are written here as sparse linear maps that work on parts:

- down: `ContextView` accumulates the low-resolution view from horizontal strips in any order,
  `acc += R_h[:, strip] @ (strip @ R_w.T)`, so only one strip is ever in memory;
- up: `upsample_window` evaluates the upsampled coarse map on one full-size window, from only the
  coarse patch that `coarse_window` says the window reads.

`R_h` and `R_w` are `resample_weights`, PyTorch's antialiased bilinear kernel, so the view matches
`prepare_image` and the upsampled map matches `F.interpolate`. `predict_tiled` calls the same
functions on the whole image, so in-memory and chunked scenes cannot drift apart.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse

from .size import Size

__all__ = [
    "ContextView",
    "coarse_window",
    "context_view",
    "fuse_context",
    "resample_weights",
    "upsample_window",
]

Window = tuple[int, int, int, int]

# Rows of the window upsampled per step: bounds the float64 temporaries of `upsample_window`.
_UPSAMPLE_BLOCK_ROWS = 512


@lru_cache(maxsize=32)
def resample_weights(in_size: int, out_size: int) -> scipy.sparse.csr_matrix:
    """(out_size x in_size) float64 weights of antialiased bilinear resampling along one axis.

    PyTorch's formula (aten UpSampleKernel `_compute_indices_min_size_weights_aa`), so results
    match `F.interpolate(..., antialias=True)` and `prepare_image`: scale = in / out; a triangle
    of half-width support = max(scale, 1) around center = scale * (i + 0.5), read on pixels
    j in [max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)) as
    max(0, 1 - |(j - center + 0.5) / max(scale, 1)|), each row normalised to sum 1. When
    enlarging, this is plain bilinear with align_corners=False, clamped at the borders. Exact
    zeros are dropped, so a row's columns are exactly the input pixels it reads. The matrix is
    cached and shared: do not modify it.
    """
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(out_size, dtype=np.float64) + 0.5)
    # int() in C++ and astype(int64) both truncate towards zero, also for negative values.
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size)
    j = xmin[:, None] + np.arange(int((xmax - xmin).max()))
    weights = np.maximum(0.0, 1.0 - np.abs((j - center[:, None] + 0.5) * invscale))
    weights[j >= xmax[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    keep = weights > 0
    rows = np.broadcast_to(np.arange(out_size)[:, None], j.shape)
    matrix = scipy.sparse.csr_matrix(
        (weights[keep], (rows[keep], j[keep])), shape=(out_size, in_size), dtype=np.float64
    )
    matrix.sort_indices()
    return matrix


class ContextView:
    """The low-resolution view of a height x width x 3 uint8 image, built from horizontal strips.

    Resizing is separable and linear, view = R_h @ image @ R_w.T per channel, so each strip of
    rows contributes R_h[:, rows] @ (strip @ R_w.T) independently of the others: a reader can
    hand over strips in any order and hold only one at a time. The sums are float64 (a
    size.height x size.width x 3 buffer); `result` rounds once at the end, so the view equals
    `context_view` of the whole image byte for byte up to float64 rounding, which in practice
    never moves a value across a rounding boundary. Each row must be added exactly once.
    """

    def __init__(self, height: int, width: int, size: Size) -> None:
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height} x {width}")
        if size.height <= 0 or size.width <= 0:
            raise ValueError(f"view size must be positive, got {size.height} x {size.width}")
        self.height, self.width, self.size = height, width, Size(*size)
        # CSC: a strip needs a column slice of R_h.
        self._rows = resample_weights(height, size.height).tocsc()
        self._cols = resample_weights(width, size.width)
        self._sum = np.zeros((size.height, size.width * 3), dtype=np.float64)
        self._seen = np.zeros(height, dtype=bool)

    def add_rows(self, y0: int, rows: np.ndarray) -> None:
        """Add image rows y0 .. y0 + h - 1, given as an h x width x 3 uint8 strip."""
        if rows.ndim != 3 or rows.shape[1:] != (self.width, 3) or rows.dtype != np.uint8:
            raise ValueError(f"a strip must be h x {self.width} x 3 uint8, got {rows.shape} {rows.dtype}")
        h = rows.shape[0]
        if y0 < 0 or y0 + h > self.height:
            raise ValueError(f"rows {y0} .. {y0 + h - 1} are outside the image's {self.height} rows")
        if self._seen[y0 : y0 + h].any():
            raise ValueError(f"rows {y0} .. {y0 + h - 1} overlap rows already added")
        if h == 0:
            return
        # Columns first, all channels at once: (W, h * 3) @ -> (w, h * 3), one converting copy.
        by_column = np.ascontiguousarray(rows.transpose(1, 0, 2), dtype=np.float64).reshape(self.width, -1)
        narrowed = (self._cols @ by_column).reshape(self.size.width, h, 3)
        by_row = np.ascontiguousarray(narrowed.transpose(1, 0, 2)).reshape(h, -1)
        self._sum += self._rows[:, y0 : y0 + h] @ by_row
        self._seen[y0 : y0 + h] = True

    @property
    def rows_added(self) -> int:
        """How many of the image's rows have been added so far."""
        return int(self._seen.sum())

    def result(self) -> np.ndarray:
        """The size.height x size.width x 3 uint8 view; every row of the image must be in."""
        if not self._seen.all():
            missing = np.flatnonzero(~self._seen)
            raise ValueError(
                f"{missing.size} of {self.height} image rows were never added (first: row {missing[0]})"
            )
        view = np.clip(np.rint(self._sum), 0, 255).astype(np.uint8)
        return view.reshape(self.size.height, self.size.width, 3)


def context_view(image: np.ndarray, size: Size) -> np.ndarray:
    """An H x W x 3 uint8 image resized to `size` like `prepare_image`, via `ContextView`.

    One strip of all rows, so the in-memory path runs exactly the arithmetic the strip-by-strip
    path runs, and the two give the same bytes.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    view = ContextView(image.shape[0], image.shape[1], size)
    view.add_rows(0, image)
    return view.result()


def _check_window(full: Size, window: Window) -> None:
    y0, x0, y1, x1 = window
    if not (0 <= y0 < y1 <= full.height and 0 <= x0 < x1 <= full.width):
        raise ValueError(f"window {window} is not a non-empty part of the {full.height} x {full.width} map")


def _read_span(weights: scipy.sparse.csr_matrix, start: int, stop: int) -> tuple[int, int]:
    # Half-open span of the columns that rows start .. stop - 1 have weights on.
    read = weights.indices[weights.indptr[start] : weights.indptr[stop]]
    return int(read.min()), int(read.max()) + 1


def coarse_window(coarse: Size, full: Size, window: Window) -> Window:
    """The coarse-map part (cy0, cx0, cy1, cx1), half-open, that resizing `coarse` to `full` reads
    on the full-size `window` (y0, x0, y1, x1).

    A worker blending one chunk of a scene needs the coarse map only there; handing it just this
    patch keeps what travels independent of the scene size. Only pixels with a nonzero weight in
    `resample_weights` count.
    """
    _check_window(full, window)
    y0, x0, y1, x1 = window
    cy0, cy1 = _read_span(resample_weights(coarse.height, full.height), y0, y1)
    cx0, cx1 = _read_span(resample_weights(coarse.width, full.width), x0, x1)
    return cy0, cx0, cy1, cx1


def upsample_window(
    patch: np.ndarray, patch_origin: tuple[int, int], coarse: Size, full: Size, window: Window
) -> np.ndarray:
    """The coarse map resized to `full`, evaluated only on `window`: (y1 - y0) x (x1 - x0) float32.

    `patch` is the part of the `coarse`-sized map whose top-left pixel is `patch_origin`; it must
    hold at least `coarse_window(coarse, full, window)`. The weights are the window's rows of
    `resample_weights`, so the result is the matching slice of the whole resized map: plain
    bilinear (align_corners=False) when enlarging, antialiased when shrinking, as
    `F.interpolate(..., mode="bilinear", antialias=True)` computes it.
    """
    _check_window(full, window)
    if patch.ndim != 2:
        raise ValueError(f"patch must be a 2-D map, got shape {patch.shape}")
    py0, px0 = patch_origin
    py1, px1 = py0 + patch.shape[0], px0 + patch.shape[1]
    if not (py0 >= 0 and px0 >= 0 and py1 <= coarse.height and px1 <= coarse.width):
        raise ValueError(
            f"patch of shape {patch.shape} at {patch_origin} is not inside the {coarse.height} x "
            f"{coarse.width} coarse map"
        )
    cy0, cx0, cy1, cx1 = coarse_window(coarse, full, window)
    if not (py0 <= cy0 and px0 <= cx0 and cy1 <= py1 and cx1 <= px1):
        raise ValueError(
            f"patch covers coarse rows {py0}:{py1}, columns {px0}:{px1}; the window {window} reads "
            f"rows {cy0}:{cy1}, columns {cx0}:{cx1}"
        )
    y0, x0, y1, x1 = window
    rows = resample_weights(coarse.height, full.height)[y0:y1, py0:py1]
    cols = resample_weights(coarse.width, full.width)[x0:x1, px0:px1]
    values = np.asarray(patch, dtype=np.float64)
    out = np.empty((y1 - y0, x1 - x0), dtype=np.float32)
    for start in range(0, y1 - y0, _UPSAMPLE_BLOCK_ROWS):
        stop = start + _UPSAMPLE_BLOCK_ROWS
        block = rows[start:stop] @ values
        out[start:stop] = (cols @ block.T).T
    return out


def fuse_context(tiles: np.ndarray, coarse: np.ndarray, weight: float) -> np.ndarray:
    """p = (1 - w) * p_tiles + w * p_coarse with w = weight * (1 - |2 p_tiles - 1|).

    A confident tile pixel (p near 0 or 1) keeps its sharp value; one near 0.5 leans on the
    global view by up to `weight`. Computed as p_tiles + w * (p_coarse - p_tiles) in place on
    `tiles` (and `coarse` is overwritten), so weight = 0 returns p_tiles exactly.
    """
    w = np.abs(2.0 * tiles - 1.0)
    np.subtract(1.0, w, out=w)
    w *= weight
    coarse -= tiles
    coarse *= w
    tiles += coarse
    return tiles

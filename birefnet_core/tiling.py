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
CRS and affine maths belong to `connectors/`. The plan and the blend live in the torch-free
`tile_blending` (re-exported here), which the scene path's chunk stages share with
`predict_tiled`, so chunked and in-memory tiling cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .preprocessing import normalize_batch
from .scene_context import context_view, fuse_context, upsample_window
from .size import Size
from .tile_blending import (
    Tile,
    TileAccumulator,
    blend_tiles,
    blend_weights,
    check_tile_args,
    count_tiles,
    plan_tiles,
    tile_weights,
)
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
        check_tile_args(self.tile_size, self.overlap)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.context_size is not None and self.context_size <= 0:
            raise ValueError(f"context_size must be positive, got {self.context_size}")
        if not 0.0 <= self.context_weight <= 1.0:
            raise ValueError(f"context_weight must be in [0, 1], got {self.context_weight}")


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

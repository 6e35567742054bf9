"""Whole-scene context on the scene path (--scene-context): one coarse look at each scene,
fused into every chunk where its tiles are unsure.

Tiles see only their own window, so an object larger than a tile is seen in parts. Before its
chunks run, each scene is read strip by strip into a low-resolution view
(`birefnet_core.scene_context.ContextView`, the same view `predict_tiled` makes in memory),
segmented once by a model replica, and the coarse probabilities are staged beside the scene's
chunks. Each chunk's blend stage then upsamples the part over its core and fuses it as
`predict_tiled` does, so the job's mask equals `predict_tiled(..., context_size=N)`.
The cost: one more read of the scene and one model start per run that has scenes to do.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import ray

from birefnet_core.scene_context import ContextView, fuse_context, upsample_window
from birefnet_core.size import Size
from connectors.raster import RasterReadError, read_window
from connectors.raster.windows import Window
from connectors.storage import S3Options, exists, join_uri, read_bytes, write_bytes_atomic

from ..common.ray_startup import STAGE_OPTIONS
from .scene_planning import ScenePlan

if TYPE_CHECKING:
    from ..common.replicas import ReplicaSpec  # not at run time: the blend workers stay torch-free

__all__ = ["CONTEXT_FILE", "SceneContext", "context_view", "stage_coarse_map", "stage_contexts"]

log = logging.getLogger(__name__)

#: The coarse probabilities of a scene, float32 N x N, beside its staged chunks.
CONTEXT_FILE = "context.npy"
#: Rows read at a time while building a view: a full-width strip of a 100k-wide scene stays
#: a few hundred MB in the widest dtype.
STRIP_ROWS = 256


#: The coarse maps a worker read last, by URI: a worker blends many chunks of one scene, and a
#: staged map never changes (its folder is keyed by the scene's version and the settings).
_COARSE: dict[str, np.ndarray] = {}
_COARSE_KEPT = 2


def _coarse(uri: str, s3: S3Options) -> np.ndarray:
    if uri not in _COARSE:
        while len(_COARSE) >= _COARSE_KEPT:
            _COARSE.pop(next(iter(_COARSE)))
        _COARSE[uri] = np.load(io.BytesIO(read_bytes(uri, s3)), allow_pickle=False)
    return _COARSE[uri]


@dataclass(frozen=True)
class SceneContext:
    """What the blend stage needs to fuse a scene's context into a chunk (size 0: no context)."""

    size: int
    weight: float
    s3: S3Options

    def fuse(self, staging: str, scene: Size, core: Window, probabilities: np.ndarray) -> np.ndarray:
        """``probabilities`` of ``core`` with the scene's coarse map fused in (unchanged when off)."""
        if not self.size:
            return probabilities
        coarse = _coarse(join_uri(staging, CONTEXT_FILE), self.s3)
        upsampled = upsample_window(coarse, (0, 0), Size(self.size, self.size), scene, core)
        return fuse_context(probabilities, upsampled, self.weight)


def context_view(plan: ScenePlan, size: int, s3: S3Options) -> np.ndarray:
    """The scene at ``size`` x ``size`` (uint8 RGB), read strip by strip: never held whole."""
    height, width = plan.info.height, plan.info.width
    view = ContextView(height, width, Size(size, size))
    for y0 in range(0, height, STRIP_ROWS):
        window = (y0, 0, min(height, y0 + STRIP_ROWS), width)
        image, _ = read_window(plan.uri, window, list(plan.bands), plan.scaling, s3)
        view.add_rows(y0, image)
    return view.result()


def _view_or_error(plan: ScenePlan, size: int, s3: S3Options) -> tuple[str, np.ndarray]:
    """(error, view): the one-line error that stops this scene (a broken scene, not the store)
    and an empty view, or "" and the view. Two returns, so only the error reaches the driver."""
    try:
        return "", context_view(plan, size, s3)
    except (RasterReadError, ValueError, FileNotFoundError) as exc:
        return f"{plan.uri}: reading the whole-scene context failed ({exc})", np.zeros((0, 0, 3), np.uint8)


def _segment_views(plans: list[ScenePlan], replica: ReplicaSpec, s3: S3Options, *views: np.ndarray) -> None:
    """One model replica segments every view and stages each coarse map beside its chunks."""
    from ..common.replicas import (
        load_predictor,  # here: the blend workers that import SceneContext stay torch-free
    )

    predictor, _ = load_predictor(replica)
    for plan, view in zip(plans, views, strict=True):
        stage_coarse_map(plan.staging, predictor.infer_batches(view[None], 1)[0], s3)


def stage_coarse_map(staging: str, coarse: np.ndarray, s3: S3Options) -> None:
    """Stage a scene's coarse probabilities (N x N) beside its chunks, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(coarse, np.float32), allow_pickle=False)
    write_bytes_atomic(join_uri(staging, CONTEXT_FILE), buffer.getvalue(), s3)


def _needs_context(plan: ScenePlan, s3: S3Options) -> bool:
    return bool(plan.todo) and not exists(join_uri(plan.staging, CONTEXT_FILE), s3)


def stage_contexts(
    plans: list[ScenePlan], size: int, replica: ReplicaSpec, gpus: float, s3: S3Options
) -> dict[str, str]:
    """Stage the coarse map of every scene that has chunks to do and none yet; returns the
    error of each scene whose view could not be read (by scene id).

    Views are read in parallel CPU tasks; one replica (a GPU when the run has them) segments
    them all. A failing replica raises: a broken model is the job's problem, not the scenes'."""
    todo = [plan for plan in plans if _needs_context(plan, s3)]
    if not todo:
        return {}
    read = ray.remote(num_cpus=1, num_returns=2, **STAGE_OPTIONS)(_view_or_error)
    # num_returns=2: each call gives (error ref, view ref); Ray's stubs type it as one ref.
    refs = [cast(list[ray.ObjectRef], read.remote(plan, size, s3)) for plan in todo]
    found = ray.get([error for error, _ in refs])
    errors = {plan.id: error for plan, error in zip(todo, found, strict=True) if error}
    readable = [(plan, view) for plan, (_, view) in zip(todo, refs, strict=True) if plan.id not in errors]
    if readable:
        segment = ray.remote(num_cpus=1, num_gpus=gpus, **STAGE_OPTIONS)(_segment_views)
        plans_done = [plan for plan, _ in readable]
        ray.get(segment.remote(plans_done, replica, s3, *(view for _, view in readable)))
        log.info("whole-scene context staged for %d scenes", len(readable))
    return errors

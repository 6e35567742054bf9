"""The scene path's stages run in one process, chunk after chunk, exactly as Ray workers run them:
for tests that compare it with in-memory tiling and for benchmarks/tiling.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from connectors.listing import Source
from connectors.manifest import RunRef, read_manifest
from connectors.raster import read_info
from connectors.staging import settings_key
from connectors.storage import S3Options
from jobs.segment.rows import column_batch, rows_of
from jobs.segment.scene_context import SceneContext
from jobs.segment.scene_planning import ScenePlan, SceneSettings, plan_scene
from jobs.segment.scene_stages import ChunkBlendStage, ChunkTileStage, chunk_rows, commit_scene

Batch = dict[str, np.ndarray]
MODEL_IDENTITY = {
    "weights_sha256": "stand-in",
    "weights_source": "stand-in",
    "dtype": "float32",
    "backend": "torch",
}


def settings(
    staging_root: str, chunk: int, halo: int, bands: list[int] | None = None, tile: int = 1024
) -> SceneSettings:
    """Settings as a run makes them (``halo`` is also the tile overlap); the key, as a run's,
    differs whenever they do."""
    picked = tuple(bands) if bands else None
    key = settings_key({"chunk": chunk, "halo": halo, "bands": picked, "tile": tile})
    return SceneSettings(chunk, halo, tile, halo, picked, (2.0, 98.0), 1, staging_root, key)


def plan_of(path: Path, scene_settings: SceneSettings, version: str = "v") -> ScenePlan:
    source = Source(
        uri=str(path), relative_path=path.name, size=path.stat().st_size, version=version, kind="file"
    )
    return plan_scene(source, read_info(str(path)), scene_settings, S3Options())


def stand_in_inference(probabilities: Callable[[np.ndarray], np.ndarray]) -> Callable[[Batch], Batch]:
    """Takes InferenceStage's place: ``probabilities`` maps a chunk's N x h x w x 3 tiles to
    N x h x w uint8 levels."""

    def infer(batch: Batch) -> Batch:
        rows = list(rows_of(batch))
        for row in rows:
            row.update(probs=probabilities(row.pop("pixels")), infer_seconds=0.0, **MODEL_IDENTITY)
        return column_batch(rows, list(rows[0]))

    return infer


@dataclass
class SceneRun:
    row: dict[str, Any]  # the scene's manifest row
    chunk_seconds: float  # reading, tiling, inference and blending of every chunk
    commit_seconds: float  # assembling the COG and committing the row


def run_scene(
    plan: ScenePlan,
    infer: Callable[[Batch], Batch],
    output: Path,
    tile: int,
    overlap: int,
    context: SceneContext | None = None,
) -> SceneRun:
    """Every chunk of ``plan`` to do, then the scene's commit; the newest manifest row of it."""
    s3 = S3Options()
    started = time.perf_counter()
    tiler = ChunkTileStage(tile, overlap, s3)
    blender = ChunkBlendStage(overlap, None, context or SceneContext(0, 0.5, s3), s3)
    results: list[dict[str, Any]] = []
    for row in chunk_rows(plan):
        results += list(rows_of(blender(infer(tiler(column_batch([row], list(row)))))))
    blended = time.perf_counter()
    commit_scene(plan, results, str(output), s3, RunRef("t", "stand-in", f"{tile}x{tile}"))
    done = time.perf_counter()
    rows = [r for r in read_manifest(str(output)).to_pylist() if r["id"] == plan.id]
    newest = max(rows, key=lambda r: r["processed_at"])
    return SceneRun(newest, blended - started, done - blended)

"""Stages of the scene path: rasters far larger than memory, segmented chunk by chunk.

A scene is cut into chunks (core plus halo, `jobs.segment.scene_planning`); each chunk is read through a
window on a CPU worker and cut into model-sized tiles, the tiles go through the same
`InferenceStage` as ordinary images, and a CPU worker blends them (`birefnet_core.tiling`),
fuses the whole-scene context when the run has one (`jobs.segment.scene_context`), keeps the chunk's
core and stages it with its statistics, compressed and with its overviews
(`connectors.raster.write_chunk`). When every chunk of a scene is staged, `commit_scene` stitches
them into one Cloud-Optimised GeoTIFF, commits the scene's manifest row and only then drops the
staging. No worker ever holds more than one chunk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from birefnet_core.quality import mask_histogram, quality_from_histogram
from birefnet_core.quantization import dequantize_probabilities, quantize_probabilities
from birefnet_core.runtime import set_cpu_threads
from birefnet_core.size import Size
from birefnet_core.tile_blending import Tile, blend_tiles, plan_tiles
from connectors.layout import OutputLayout
from connectors.manifest import ManifestRow, RunRef, write_manifest_part
from connectors.raster import (
    BandScaling,
    Chunk,
    assemble_mask,
    encode_nodata,
    read_window,
    remove_staging,
    write_chunk,
)
from connectors.raster.windows import Window
from connectors.storage import S3Options, StorageUnavailableError

from .rows import CHUNK_STATUS_KEYS, MODEL_KEYS, TILE_KEYS, column_batch, rows_of, status_columns
from .scene_context import SceneContext
from .scene_planning import ScenePlan

__all__ = [
    "ChunkBlendStage",
    "ChunkTileStage",
    "chunk_rows",
    "commit_scene",
]

log = logging.getLogger(__name__)

MULTIPLE = 32  # BiRefNet needs tile sides divisible by 32


def _chunk_of(value: dict[str, Any]) -> Chunk:
    """Rebuild a Chunk from a pipeline row, where Ray turns tuples into lists or arrays."""
    return Chunk(
        row=int(value["row"]),
        col=int(value["col"]),
        core=_window(value["core"]),
        read=_window(value["read"]),
    )


def _window(values: Any) -> Window:
    y0, x0, y1, x1 = (int(v) for v in values)
    return (y0, x0, y1, x1)


def _scaling_text(scaling: BandScaling | None) -> str:
    """A scene's band scaling as JSON ("" for 8-bit scenes): Ray Data would turn a column of
    Nones into NaN, so the optional value travels as a string."""
    return json.dumps(dataclasses.asdict(scaling)) if scaling else ""


def _scaling_of(text: str) -> BandScaling | None:
    return BandScaling(**json.loads(text)) if text else None


def _pad_to_multiple(tiles: np.ndarray) -> np.ndarray:
    """Edge-pad N x h x w x 3 tiles so h and w are multiples of 32 (small scenes, thin chunks)."""
    h, w = tiles.shape[1:3]
    pad_h, pad_w = -h % MULTIPLE, -w % MULTIPLE
    if not pad_h and not pad_w:
        return tiles
    return np.pad(tiles, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


class ChunkTileStage:
    """CPU: read one chunk's window (only that window) and cut it into model-sized tiles."""

    def __init__(self, tile_size: int, overlap: int, s3: S3Options) -> None:
        self.tile_size = tile_size
        self.overlap = overlap
        self.s3 = s3

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_cpu_threads(1)  # one core per CPU task; see birefnet_core.runtime
        rows = []
        for row in rows_of(batch):
            started = time.perf_counter()
            chunk = _chunk_of(row["chunk"])
            scaling = _scaling_of(str(row["scaling"]))
            row.update(
                tiles=np.zeros((0, 4), np.int64),
                pixels=np.zeros((0, 0, 0, 3), np.uint8),
                valid=np.zeros((0, 0), bool),
            )
            try:
                image, valid = read_window(row["uri"], chunk.read, list(row["bands"]), scaling, self.s3)
                plan = plan_tiles(image.shape[0], image.shape[1], self.tile_size, self.overlap)
                tiles = np.stack([image[t.slices] for t in plan])
                row.update(
                    tiles=np.array([(t.y0, t.x0, t.y1, t.x1) for t in plan], np.int64),
                    pixels=_pad_to_multiple(tiles),
                    valid=valid,
                )
            except StorageUnavailableError:
                raise  # the store, not this input: the job stops and a re-run resumes
            except Exception as exc:
                row["error"] = f"{row['uri']} chunk {chunk.row},{chunk.col}: {exc}"
            row["decode_seconds"] = time.perf_counter() - started
            rows.append(row)
        return column_batch(rows, TILE_KEYS)


def _tile_probabilities(row: dict[str, Any]) -> Iterator[tuple[Tile, np.ndarray]]:
    """A chunk row's tiles with their probabilities, cut back from the padded uint8 tiles."""
    for (y0, x0, y1, x1), levels in zip(row["tiles"], row["probs"], strict=True):
        tile = Tile(int(y0), int(x0), int(y1), int(x1))
        yield tile, dequantize_probabilities(levels[: tile.height, : tile.width])


class ChunkBlendStage:
    """CPU: blend a chunk's tile probabilities, fuse the scene's context, keep the core, carry
    nodata, and stage it with the statistics its scene's manifest row needs."""

    def __init__(self, overlap: int, threshold: float | None, context: SceneContext, s3: S3Options) -> None:
        self.overlap = overlap
        self.threshold = threshold
        self.context = context
        self.s3 = s3

    def _blend(self, row: dict[str, Any]) -> int:
        chunk = _chunk_of(row["chunk"])
        valid = row["valid"]
        height, width = valid.shape
        accumulator = blend_tiles(height, width, self.overlap, _tile_probabilities(row))
        y0, x0, y1, x1 = chunk.core_in_read
        probabilities = accumulator.result()[y0:y1, x0:x1]
        scene = Size(*(int(v) for v in row["scene_size"]))
        probabilities = self.context.fuse(str(row["staging"]), scene, chunk.core, probabilities)
        core_valid = valid[y0:y1, x0:x1]
        mask = encode_nodata(quantize_probabilities(probabilities, self.threshold), core_valid)
        seam_sum, seam_pairs = accumulator.seam_totals()
        histogram = mask_histogram(mask[core_valid]) if core_valid.any() else np.zeros(256, np.int64)
        stats = {
            "histogram": json.dumps([int(v) for v in histogram]),
            "seam_sum": repr(float(seam_sum)),
            "seam_pairs": str(int(seam_pairs)),
            "tile_count": str(len(row["tiles"])),
            **{key: str(row[key]) for key in MODEL_KEYS},
        }
        write_chunk(str(row["staging"]), chunk, mask, self.s3, stats)
        return len(row["tiles"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_cpu_threads(1)  # one core per CPU task; see birefnet_core.runtime
        out = []
        for row in rows_of(batch):
            started = time.perf_counter()
            tile_count, error = 0, str(row["error"])
            if not error:
                try:
                    tile_count = self._blend(row)
                except StorageUnavailableError:
                    raise  # the store, not this input: the job stops and a re-run resumes
                except Exception as exc:
                    error = f"{row['uri']}: blending chunk failed ({exc})"
            out.append(
                {
                    "scene_id": row["scene_id"],
                    "chunk": row["chunk"],
                    "error": error,
                    "decode_seconds": float(row["decode_seconds"]),
                    "infer_seconds": float(row["infer_seconds"]),
                    "encode_seconds": time.perf_counter() - started,
                    **{key: row[key] for key in MODEL_KEYS},
                    "tile_count": tile_count,
                }
            )
        return column_batch(out, CHUNK_STATUS_KEYS)


def chunk_rows(plan: ScenePlan) -> list[dict[str, Any]]:
    """One pipeline row per chunk still to segment; plain dicts so Ray can carry them."""
    scaling = _scaling_text(plan.scaling)
    return [
        {
            "scene_id": plan.id,
            "uri": plan.uri,
            "chunk": dataclasses.asdict(chunk),
            "scene_size": [plan.info.height, plan.info.width],
            "staging": plan.staging,
            "bands": list(plan.bands),
            "scaling": scaling,
            "error": "",
        }
        for chunk in plan.todo
    ]


def _sum_stats(plan: ScenePlan, staged: dict[Chunk, dict[str, str]]) -> dict[str, Any]:
    """The scene's statistics from its staged chunks' stats: this run's and those reused."""
    histogram = np.zeros(256, np.int64)
    seam_sum, seam_pairs, tiles = 0.0, 0, 0
    model: dict[str, str] = {}
    for chunk in plan.chunks:
        stats = staged[chunk]
        histogram += np.asarray(json.loads(stats["histogram"]), np.int64)
        seam_sum += float(stats["seam_sum"])
        seam_pairs += int(stats["seam_pairs"])
        tiles += int(stats["tile_count"])
        model = model or {key: stats[key] for key in MODEL_KEYS if key in stats}
    return {
        **(quality_from_histogram(histogram).as_dict() if histogram.sum() else {}),
        "seam_disagreement": seam_sum / seam_pairs if seam_pairs else 0.0,
        "tile_count": tiles,
        **model,
    }


def _scene_row(
    plan: ScenePlan, results: list[dict[str, Any]], output: str, s3: S3Options, run: RunRef
) -> ManifestRow:
    """Stitch the staged chunks into the scene's COG; the scene's manifest row either way."""
    errors = [str(r["error"]) for r in results if r["error"]]
    if len(errors) > 1:
        errors = [f"{errors[0]} (and {len(errors) - 1} more chunks)"]
    if not errors and len(results) < len(plan.todo):
        errors.append(f"{plan.uri}: {len(plan.todo) - len(results)} chunks never came back")
    started = time.perf_counter()
    written: dict[str, Any] = {}
    if not errors:
        try:
            destination = OutputLayout(output).scene_mask(plan.name)
            staged = assemble_mask(
                destination, plan.info, plan.chunks, plan.staging, s3=s3, delete_staging=False
            )
            written = {**_sum_stats(plan, staged), "mask_uri": destination}
        except StorageUnavailableError:
            raise  # the store, not this input: the job stops and a re-run resumes
        except Exception as exc:
            errors.append(f"{plan.uri}: assembling the mask failed ({exc})")
            # A staged chunk that cannot be stitched would fail every re-run: start the scene over.
            remove_staging(plan.staging, s3)
    return ManifestRow(
        input=plan.ref,
        run=run,
        error="; ".join(errors) or None,
        width=plan.info.width,
        height=plan.info.height,
        chunk_count=len(plan.chunks),
        decode_seconds=sum(float(r["decode_seconds"]) for r in results),
        infer_seconds=sum(float(r["infer_seconds"]) for r in results),
        encode_seconds=time.perf_counter() - started,
        **{**({k: results[0][k] for k in MODEL_KEYS} if results else {}), **written},
    )


def commit_scene(
    plan: ScenePlan, results: list[dict[str, Any]], output: str, s3: S3Options, run: RunRef
) -> dict[str, np.ndarray]:
    """Assemble one scene and commit its manifest row; drop its staging once the row is safe.

    ``results`` are this run's status rows of the scene's `todo` chunks (reused chunks have
    none). Until the row is committed the staging stays, so a run killed in between re-assembles
    from it without segmenting anything. Returns the status columns the driver counts."""
    row = _scene_row(plan, results, output, s3, run)
    write_manifest_part(output, [row], s3)
    if row.error is None:
        try:
            remove_staging(plan.staging, s3)
        except Exception as exc:  # committed already; the sweep removes what is left by age
            log.warning("%s: could not remove its staged chunks (%s)", plan.uri, exc)
    return status_columns([row])

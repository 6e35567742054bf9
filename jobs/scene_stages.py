"""Stages of the scene path: rasters far larger than memory, segmented chunk by chunk.

A scene is cut into chunks (core plus halo, `connectors.raster.plan_chunks`); each chunk is read
through a window on a CPU worker and cut into model-sized tiles, the tiles go through the same
`InferenceStage` as ordinary images, and a CPU worker blends them (`birefnet_core.tiling`), keeps
the chunk's core and stages it. When every chunk of a scene is staged, `assemble_scene` streams
them into one Cloud-Optimised GeoTIFF. No worker ever holds more than one chunk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from birefnet_core.quality import mask_histogram, quality_from_histogram
from birefnet_core.quantization import dequantize_probabilities, quantize_probabilities
from birefnet_core.runtime import set_cpu_threads
from birefnet_core.tiling import Tile, blend_tiles, plan_tiles
from connectors.layout import OutputLayout, collision_message
from connectors.listing import Source, item_id, output_name
from connectors.manifest import InputRef, ManifestRow, RunRef
from connectors.raster import (
    BandScaling,
    Chunk,
    RasterInfo,
    RasterReadError,
    assemble_mask,
    compute_band_scaling,
    encode_nodata,
    plan_chunks,
    read_info,
    read_window,
    resolve_bands,
    write_chunk,
)
from connectors.storage import S3Options, StorageUnavailableError, join_uri

from .batches import column_batch, rows_of
from .segment_stages import MODEL_KEYS

__all__ = [
    "ChunkBlendStage",
    "ChunkTileStage",
    "ScenePlan",
    "assemble_scene",
    "plan_candidate",
    "plan_scene",
    "scene_error_row",
]

log = logging.getLogger(__name__)

TILE_KEYS = (
    "scene_id",
    "uri",
    "chunk",
    "bands",
    "scaling",
    "tiles",
    "pixels",
    "valid",
    "error",
    "decode_seconds",
)
MULTIPLE = 32  # BiRefNet needs tile sides divisible by 32


@dataclass(frozen=True)
class ScenePlan:
    """Everything the workers need to process one scene, decided once on the driver."""

    id: str
    uri: str
    relative_path: str
    name: str
    size: int
    version: str
    info: RasterInfo
    bands: tuple[int, int, int]
    scaling: BandScaling | None
    chunks: tuple[Chunk, ...]

    @property
    def ref(self) -> InputRef:
        return InputRef(self.id, self.uri, self.relative_path, self.size, self.version)


def plan_scene(
    source: Source,
    info: RasterInfo,
    bands: list[int] | None,
    percentiles: tuple[float, float],
    chunk_size: int,
    halo: int,
    s3: S3Options,
) -> ScenePlan:
    chosen = resolve_bands(bands, info.count, source.uri)
    scaling = None if info.dtype == "uint8" else compute_band_scaling(source.uri, chosen, percentiles, s3)
    return ScenePlan(
        id=item_id(source.uri),
        uri=source.uri,
        relative_path=source.relative_path,
        name=output_name(source),
        size=source.size,
        version=source.version,
        info=info,
        bands=tuple(chosen),  # type: ignore[arg-type]
        scaling=scaling,
        chunks=tuple(plan_chunks(info.height, info.width, chunk_size, halo)),
    )


def plan_candidate(
    source: Source,
    bands: list[int] | None,
    percentiles: tuple[float, float],
    chunk_size: int,
    halo: int,
    min_pixels: int,
    s3: S3Options,
) -> ScenePlan | str | None:
    """A TIFF's route: a ScenePlan (GeoTIFFs, and plain TIFFs above ``min_pixels``), None for an
    ordinary image, or the one-line error that stops this scene (and nothing else)."""
    try:
        info = read_info(source.uri, s3)
    except RasterReadError as exc:
        log.warning("%s: not readable as a raster (%s); treating it as an image", source.uri, exc)
        return None
    except FileNotFoundError:
        return f"{source.uri}: not found (removed since it was listed?)"
    if not (info.is_georeferenced or info.width * info.height > min_pixels):
        return None
    if not output_name(source):
        return f"{source.uri}: {collision_message(source.relative_path)}"
    try:
        return plan_scene(source, info, bands, percentiles, chunk_size, halo, s3)
    except (RasterReadError, ValueError, FileNotFoundError) as exc:
        return f"{source.uri}: cannot read the scene ({exc})"


def source_ref(source: Source) -> InputRef:
    return InputRef(item_id(source.uri), source.uri, source.relative_path, source.size, source.version)


def scene_error_row(source: Source, error: str, run: RunRef) -> ManifestRow:
    """The manifest row of a scene that stopped before any chunk ran."""
    return ManifestRow(input=source_ref(source), run=run, error=error)


def _chunk_of(value: dict[str, Any]) -> Chunk:
    """Rebuild a Chunk from a pipeline row, where Ray turns tuples into lists or arrays."""
    return Chunk(
        row=int(value["row"]),
        col=int(value["col"]),
        core=tuple(int(v) for v in value["core"]),  # type: ignore[arg-type]
        read=tuple(int(v) for v in value["read"]),  # type: ignore[arg-type]
    )


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
    """CPU: blend a chunk's tile probabilities, keep its core, carry nodata, stage it."""

    def __init__(self, staging_root: str, overlap: int, threshold: float | None, s3: S3Options) -> None:
        self.staging_root = staging_root
        self.overlap = overlap
        self.threshold = threshold
        self.s3 = s3

    def _blend(self, row: dict[str, Any]) -> dict[str, Any]:
        chunk = _chunk_of(row["chunk"])
        valid = row["valid"]
        accumulator = blend_tiles(*valid.shape, self.overlap, _tile_probabilities(row))
        y0, x0, y1, x1 = chunk.core_in_read
        mask = quantize_probabilities(accumulator.result()[y0:y1, x0:x1], self.threshold)
        core_valid = valid[y0:y1, x0:x1]
        mask = encode_nodata(mask, core_valid)
        write_chunk(join_uri(self.staging_root, row["scene_id"]), chunk, mask, self.s3)
        seam_sum, seam_pairs = accumulator.seam_totals()
        histogram = mask_histogram(mask[core_valid]) if core_valid.any() else np.zeros(256, np.int64)
        return {
            "seam_sum": seam_sum,
            "seam_pairs": seam_pairs,
            "histogram": histogram,
            "tile_count": len(row["tiles"]),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_cpu_threads(1)  # one core per CPU task; see birefnet_core.runtime
        out = []
        for row in rows_of(batch):
            started = time.perf_counter()
            result = {"seam_sum": 0.0, "seam_pairs": 0, "histogram": np.zeros(256, np.int64), "tile_count": 0}
            error = str(row["error"])
            if not error:
                try:
                    result = self._blend(row)
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
                    **result,
                }
            )
        keys = ("scene_id", "chunk", "error", "decode_seconds", "infer_seconds", "encode_seconds",
                *MODEL_KEYS, "seam_sum", "seam_pairs", "histogram", "tile_count")  # fmt: skip
        return column_batch(out, keys)


def chunk_rows(plan: ScenePlan) -> list[dict[str, Any]]:
    """One pipeline row per chunk; plain dicts so Ray can carry them."""
    scaling = _scaling_text(plan.scaling)
    return [
        {
            "scene_id": plan.id,
            "uri": plan.uri,
            "chunk": dataclasses.asdict(chunk),
            "bands": list(plan.bands),
            "scaling": scaling,
            "error": "",
        }
        for chunk in plan.chunks
    ]


def assemble_scene(
    plan: ScenePlan,
    chunk_results: list[dict[str, Any]],
    output: str,
    staging_root: str,
    s3: S3Options,
    run: RunRef,
) -> ManifestRow:
    """Stream the staged chunks into the scene's COG and summarise the scene as one manifest row."""
    errors = [r["error"] for r in chunk_results if r["error"]]
    started = time.perf_counter()
    written: dict[str, Any] = {}
    if not errors and len(chunk_results) == len(plan.chunks):
        try:
            destination = OutputLayout(output).scene_mask(plan.name)
            assemble_mask(destination, plan.info, plan.chunks, join_uri(staging_root, plan.id), s3=s3)
            histogram = np.sum([r["histogram"] for r in chunk_results], axis=0)
            pairs = sum(int(r["seam_pairs"]) for r in chunk_results)
            written.update(quality_from_histogram(histogram).as_dict() if histogram.sum() else {})
            written.update(
                mask_uri=destination,
                seam_disagreement=sum(r["seam_sum"] for r in chunk_results) / pairs if pairs else 0.0,
            )
        except StorageUnavailableError:
            raise  # the store, not this input: the job stops and a re-run resumes
        except Exception as exc:
            errors.append(f"{plan.uri}: assembling the mask failed ({exc})")
    elif not errors:
        errors.append(f"{plan.uri}: {len(plan.chunks) - len(chunk_results)} chunks never came back")
    return ManifestRow(
        input=plan.ref,
        run=run,
        error="; ".join(errors) or None,
        width=plan.info.width,
        height=plan.info.height,
        chunk_count=len(plan.chunks),
        tile_count=int(sum(r["tile_count"] for r in chunk_results)),
        decode_seconds=sum(r["decode_seconds"] for r in chunk_results),
        infer_seconds=sum(r["infer_seconds"] for r in chunk_results),
        encode_seconds=time.perf_counter() - started,
        **({k: chunk_results[0][k] for k in MODEL_KEYS} if chunk_results else {}),
        **written,
    )

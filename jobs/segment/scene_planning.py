"""Which inputs are scenes, and the plan of each: its chunks, its scaling, what is staged already.

Decided once per scene on a worker (headers only, plus one listing of its staging folder), so
the driver holds small plans, never pixels. A raster takes the scene path, read window by
window, when decoding it whole would be wrong or wasteful (`takes_scene_path`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from birefnet_core.tile_blending import axis_tile_count
from connectors.layout import OutputLayout, collision_message
from connectors.listing import Source, extension_of, item_id, output_name
from connectors.manifest import InputRef, ManifestRow, RunRef
from connectors.raster import (
    CHUNK_PLAN,
    BandScaling,
    Chunk,
    RasterInfo,
    RasterReadError,
    compute_band_scaling,
    plan_chunks,
    read_info,
    resolve_bands,
    staged_chunks,
)
from connectors.staging import scene_staging_uri, settings_key
from connectors.storage import S3Options

from .config import SegmentConfig

__all__ = [
    "ScenePlan",
    "SceneSettings",
    "plan_candidate",
    "plan_scene",
    "scene_error_row",
    "takes_scene_path",
]

log = logging.getLogger(__name__)

#: Formats GDAL reads by window but Pillow cannot read at all: always the scene path.
WINDOWED_ONLY = frozenset({".vrt"})
#: Formats GDAL decodes sequentially: a scene only when big (a window costs every row above it).
SEQUENTIAL = frozenset({".png", ".jpg", ".jpeg"})


@dataclass(frozen=True)
class SceneSettings:
    """How scenes are cut and where their chunks are staged; the same for every scene of a run."""

    chunk_size: int
    halo: int
    tile_size: int
    overlap: int
    bands: tuple[int, ...] | None
    percentiles: tuple[float, float]
    min_pixels: int
    staging_root: str
    key: str  # connectors.staging.settings_key of whatever decides a staged chunk's pixels

    @classmethod
    def of(cls, config: SegmentConfig, dtype: str, weights_version: str) -> SceneSettings:
        """The run's settings; the staging key covers whatever decides a staged chunk's pixels."""
        decides_pixels: dict[str, Any] = {
            "weights": config.weights_source,
            "weights_version": weights_version,
            "weights_sha256": config.weights_sha256,
            "variant": config.variant,
            "backend": config.backend,
            "dtype": dtype,
            "tile": config.scene_tile_size,
            "overlap": config.tile_overlap,
            "chunk": config.chunk_size,
            "chunk_plan": CHUNK_PLAN,
            "halo": config.scene_halo,
            "bands": config.bands,
            "percentiles": config.band_percentiles,
            "threshold": config.threshold,
            "context": config.scene_context,
            "context_weight": config.scene_context_weight,
        }
        return cls(
            chunk_size=config.chunk_size,
            halo=config.scene_halo,
            tile_size=config.scene_tile_size,
            overlap=config.tile_overlap,
            bands=tuple(config.bands) if config.bands else None,
            percentiles=config.band_percentiles,
            min_pixels=config.scene_min_pixels,
            staging_root=OutputLayout(config.output).staging,
            key=settings_key(decides_pixels),
        )


@dataclass(frozen=True)
class ScenePlan:
    """Everything the workers need to process one scene, decided once on a worker."""

    id: str
    uri: str
    relative_path: str
    name: str
    size: int
    version: str
    info: RasterInfo
    bands: tuple[int, ...]
    scaling: BandScaling | None
    chunks: tuple[Chunk, ...]
    staging: str
    staged: frozenset[tuple[int, int]] = frozenset()

    @property
    def ref(self) -> InputRef:
        return InputRef(self.id, self.uri, self.relative_path, self.size, self.version)

    @property
    def todo(self) -> tuple[Chunk, ...]:
        """The chunks no earlier run staged with the same settings."""
        return tuple(c for c in self.chunks if (c.row, c.col) not in self.staged)


def plan_scene(source: Source, info: RasterInfo, settings: SceneSettings, s3: S3Options) -> ScenePlan:
    """The plan of one scene, with the chunks an interrupted run already staged for it."""
    chosen = resolve_bands(list(settings.bands) if settings.bands else None, info.count, source.uri)
    scaling = (
        None if info.dtype == "uint8" else compute_band_scaling(source.uri, chosen, settings.percentiles, s3)
    )
    scene_id = item_id(source.uri)
    staging = scene_staging_uri(settings.staging_root, settings.key, scene_id, source.version)
    tiles_along = functools.partial(axis_tile_count, tile_size=settings.tile_size, overlap=settings.overlap)
    chunks = tuple(plan_chunks(info.height, info.width, settings.chunk_size, settings.halo, tiles_along))
    planned = {(c.row, c.col) for c in chunks}
    return ScenePlan(
        id=scene_id,
        uri=source.uri,
        relative_path=source.relative_path,
        name=output_name(source),
        size=source.size,
        version=source.version,
        info=info,
        bands=tuple(chosen),
        scaling=scaling,
        chunks=chunks,
        staging=staging,
        staged=frozenset(staged_chunks(staging, s3) & planned),
    )


def takes_scene_path(info: RasterInfo, extension: str, min_pixels: int) -> bool:
    """Whether a raster is segmented window by window rather than decoded whole as an image.

    Georeferenced rasters always are (their masks must overlay them), as are formats only GDAL
    reads; PNG and JPEG only when huge, since GDAL decodes them row by row from the top."""
    big = info.width * info.height > min_pixels
    if extension in WINDOWED_ONLY:
        return True
    if extension in SEQUENTIAL:
        return big
    return big or info.is_georeferenced


def plan_candidate(source: Source, settings: SceneSettings, s3: S3Options) -> ScenePlan | str | None:
    """A raster's route: a ScenePlan, None for an ordinary image, or the one-line error that
    stops this scene (and nothing else)."""
    extension = extension_of(source.relative_path)
    try:
        info = read_info(source.uri, s3)
    except RasterReadError as exc:
        if extension in WINDOWED_ONLY:
            return f"{source.uri}: cannot read the scene ({exc})"
        log.warning("%s: not readable as a raster (%s); treating it as an image", source.uri, exc)
        return None
    except FileNotFoundError:
        return f"{source.uri}: not found (removed since it was listed?)"
    if not takes_scene_path(info, extension, settings.min_pixels):
        return None
    if not output_name(source):
        return f"{source.uri}: {collision_message(source.relative_path)}"
    try:
        return plan_scene(source, info, settings, s3)
    except (RasterReadError, ValueError, FileNotFoundError) as exc:
        return f"{source.uri}: cannot read the scene ({exc})"


def scene_error_row(source: Source, error: str, run: RunRef) -> ManifestRow:
    """The manifest row of a scene that stopped before any chunk ran."""
    return ManifestRow(
        input=InputRef(item_id(source.uri), source.uri, source.relative_path, source.size, source.version),
        run=run,
        error=error,
    )

"""Staged chunk masks: each worker stores its chunk's core as a small object; the driver assembles the COG.

Chunks of one scene are segmented by different worker processes, so they meet only through
storage; a retried or resumed scene redoes just the chunks whose staged core is missing.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence

import numpy as np

from connectors import storage
from connectors.images import encode_mask_png
from connectors.raster.cog_writer import MaskRasterWriter
from connectors.raster.gdal_env import import_rasterio
from connectors.raster.info import RasterInfo
from connectors.raster.opening import RasterReadError
from connectors.raster.windows import Chunk, check_window
from connectors.storage import S3Options


def chunk_uri(staging_root: str, chunk: Chunk) -> str:
    """Where ``chunk``'s core is staged: ``<staging_root>/<row>_<col>.png``."""
    return storage.safe_output_uri(staging_root, f"{chunk.row:05d}_{chunk.col:05d}.png")


def write_chunk(staging_root: str, chunk: Chunk, mask: np.ndarray, s3: S3Options | None = None) -> str:
    """Stage the mask of ``chunk``'s core and return its URI.

    Chunks are written by different worker processes, so each core goes to its own small
    object, atomically (a retried task never leaves half a chunk). The format is an 8-bit
    greyscale PNG: lossless, compact for masks, fast to encode (``encode_mask_png``) and
    viewable when debugging. Apply ``encode_nodata`` first to carry the input's nodata.
    """
    y0, x0, y1, x1 = chunk.core
    if mask.shape != (y1 - y0, x1 - x0) or mask.dtype != np.uint8:
        raise ValueError(
            f"chunk {chunk.row},{chunk.col}: core {chunk.core} needs a {(y1 - y0, x1 - x0)} uint8 mask, "
            f"got {mask.dtype} {mask.shape}"
        )
    uri = chunk_uri(staging_root, chunk)
    storage.write_bytes_atomic(uri, encode_mask_png(np.ascontiguousarray(mask)), s3)
    return uri


def read_chunk(staging_root: str, chunk: Chunk, s3: S3Options | None = None) -> np.ndarray:
    """The staged (h, w) uint8 mask of ``chunk``'s core; FileNotFoundError names a missing one.

    Decoded by GDAL rather than Pillow, whose decompression-bomb limit (about 179 Mpx) a large
    chunk size could exceed.
    """
    rasterio = import_rasterio()
    uri = chunk_uri(staging_root, chunk)
    data = storage.read_bytes(uri, s3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.io.MemoryFile(data) as memfile, memfile.open() as dataset:
                mask = dataset.read(1)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"{uri}: staged chunk is not a readable PNG ({exc})") from exc
    y0, x0, y1, x1 = chunk.core
    if mask.shape != (y1 - y0, x1 - x0) or mask.dtype != np.uint8:
        raise RasterReadError(f"{uri}: staged {mask.dtype} {mask.shape} does not match core {chunk.core}")
    return mask


def _check_tiling(chunks: Sequence[Chunk], info: RasterInfo) -> None:
    """Refuse a chunk list that would leave holes (e.g. a partial list) or write twice."""
    cores = [c.core for c in chunks]
    for core in cores:
        check_window(core, info.height, info.width, "mask")
    area = sum((y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in cores)
    if len(set(cores)) != len(cores) or area != info.width * info.height:
        raise ValueError(
            f"chunk cores cover {area} pixels in {len(cores)} chunks ({len(set(cores))} distinct); "
            f"the raster has {info.width * info.height}: pass the full plan_chunks() list"
        )


def assemble_mask(
    destination: str,
    info: RasterInfo,
    chunks: Sequence[Chunk],
    staging_root: str,
    nodata: int | None = 0,
    s3: S3Options | None = None,
    delete_staging: bool = True,
) -> None:
    """Stream every staged chunk core into the COG at ``destination``, then delete the staging.

    Memory holds one chunk at a time. A missing chunk raises FileNotFoundError naming it before
    anything is published, and the staging is kept so a retry only redoes the missing chunks.
    """
    _check_tiling(chunks, info)
    with MaskRasterWriter(destination, info, nodata=nodata, s3=s3) as writer:
        for chunk in chunks:
            writer.write(chunk.core, read_chunk(staging_root, chunk, s3))
    if delete_staging:
        fs, _ = storage.filesystem(staging_root, s3)
        for chunk in chunks:
            _, path = storage.filesystem(chunk_uri(staging_root, chunk), s3)
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
        if storage.uri_scheme(staging_root) in storage.LOCAL_SCHEMES:
            with contextlib.suppress(OSError):
                os.rmdir(storage.filesystem(staging_root)[1])  # only if now empty

"""Windowed raster I/O for scenes far larger than memory: GeoTIFF/COG in, Cloud-Optimised GeoTIFF out.

A scene is never held whole by any worker. The driver reads its metadata (``read_info``),
plans chunks (``plan_chunks``) and fixes one 8-bit scaling for the whole scene
(``compute_band_scaling``, from a decimated read); each worker reads one chunk's window
(``read_window``), segments it and stages the chunk's core (``write_chunk``): a tiled, compressed
TIFF with its own AVERAGE overviews and the chunk's statistics (``read_chunk_stats``), so the
per-pixel work of the COG happens in parallel on the workers. A resumed scene skips the chunks
already staged (``staged_chunks``). Finally ``assemble_mask`` only stitches: a VRT mosaic of the
staged files, whose overviews are mosaics of theirs, copied by GDAL's COG driver into one COG
with the input's CRS and transform, and ``remove_staging`` drops the chunks. Whole masks held by
one process go through ``MaskRasterWriter`` / ``write_geotiff_mask`` instead. CRS and affine
maths live here, never in ``birefnet_core``, which only sees pixel windows.

Supported inputs: anything GDAL opens, addressed by local path, ``file://``, ``s3://`` (read
through GDAL's ``/vsis3/`` with the endpoint and credentials of ``S3Options``) or any other
fsspec URI such as ``memory://`` (read through a Python file object). Windowed reads are efficient
for TIFF, BigTIFF, GeoTIFF and COG; GDAL decodes PNG and JPEG sequentially, so a window of a huge
PNG/JPEG costs a decode of every row above it - convert such images to a tiled TIFF first.
Plain (non-georeferenced) TIFFs work the same way, and their masks come out as plain tiled TIFFs.

rasterio is an optional dependency (``pip install 'birefnet-ray[geo]'``), imported on first use,
so the pure parts (``plan_chunks``, the dataclasses) work without it.
"""

from connectors.raster.band_scaling import BandScaling, compute_band_scaling
from connectors.raster.band_selection import default_bands, resolve_bands
from connectors.raster.chunk_staging import (
    assemble_mask,
    chunk_uri,
    read_chunk,
    read_chunk_stats,
    remove_staging,
    staged_chunks,
    write_chunk,
)
from connectors.raster.cog_writer import MaskRasterWriter, encode_nodata, write_geotiff_mask
from connectors.raster.gdal_env import gdal_s3_options
from connectors.raster.info import RasterInfo, read_info
from connectors.raster.opening import RasterReadError
from connectors.raster.window_reads import read_window
from connectors.raster.windows import CHUNK_PLAN, Chunk, plan_chunks

__all__ = [
    "CHUNK_PLAN",
    "BandScaling",
    "Chunk",
    "MaskRasterWriter",
    "RasterInfo",
    "RasterReadError",
    "assemble_mask",
    "chunk_uri",
    "compute_band_scaling",
    "default_bands",
    "encode_nodata",
    "gdal_s3_options",
    "plan_chunks",
    "read_chunk",
    "read_chunk_stats",
    "read_info",
    "read_window",
    "remove_staging",
    "resolve_bands",
    "staged_chunks",
    "write_chunk",
    "write_geotiff_mask",
]

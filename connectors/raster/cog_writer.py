"""Writing masks as Cloud-Optimised GeoTIFFs: streamed window by window (or converted from a VRT mosaic), published atomically.

The mask keeps the input's size, CRS and transform, so GIS tools overlay it on the scene as is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np

from connectors import storage
from connectors.raster.gdal_env import import_rasterio
from connectors.raster.info import RasterInfo
from connectors.raster.windows import Window, check_window, rasterio_window
from connectors.storage import S3Options

logger = logging.getLogger(__name__)

#: Tile size of the mask outputs (staging GTiff and COG); chunk sizes that are multiples of it
#: keep every window write block-aligned, so no compressed tile is ever rewritten.
MASK_BLOCK = 512

#: COG creation options; AVERAGE overviews keep soft mask edges and skip nodata pixels. DEFLATE
#: level 3 rather than GDAL's 6: on a 20k x 20k mask (2 threads) 1.7 s instead of 2.0 s for 3%
#: more bytes, and 5.1 s instead of 13.8 s for 3% more on a noisy model's mask.
COG_OPTIONS: dict[str, str | int] = {
    "COMPRESS": "DEFLATE",
    "LEVEL": 3,
    "OVERVIEWS": "AUTO",
    "OVERVIEW_RESAMPLING": "AVERAGE",
    "BLOCKSIZE": MASK_BLOCK,
    "BIGTIFF": "IF_SAFER",
}


def encode_nodata(mask: np.ndarray, valid: np.ndarray | None, nodata: int | None = 0) -> np.ndarray:
    """Put ``nodata`` where ``valid`` is False, and keep valid pixels off the nodata value.

    A valid pixel equal to ``nodata`` would read as missing, so it moves one step towards the
    middle of the range (0 -> 1, 255 -> 254): 1/255 of probability is the price of a mask that
    GIS tools display with the input's holes. Returns a new array; ``mask`` is left untouched.
    """
    out = np.array(mask, np.uint8, copy=True)
    if nodata is None or valid is None:
        return out
    if valid.shape != out.shape:
        raise ValueError(f"valid {valid.shape} does not match mask {out.shape}")
    out[(out == nodata) & valid] = nodata + 1 if nodata < 255 else nodata - 1
    out[~valid] = nodata
    return out


class MaskRasterWriter:
    """Stream a single-band uint8 mask into a Cloud-Optimised GeoTIFF, window by window.

    Windows go to a tiled, DEFLATE-compressed GTiff in a private temp dir (never the whole
    scene in memory); on a clean exit it is converted with GDAL's COG driver (overviews,
    512 px tiles) and published atomically: local destinations by a rename from a hidden file
    beside the target, others (``s3://`` ...) by one streamed upload, which S3 makes visible
    only when complete. On an exception nothing is published and the temp files are removed.

    The output has the input's size, CRS and transform; without a CRS (plain images) it is a
    plain tiled TIFF with the same internal layout. Pixels never written read as ``nodata``
    (0 unless None). Use ``encode_nodata`` to carry the input's nodata into the mask.
    """

    def __init__(
        self,
        destination: str,
        info: RasterInfo,
        nodata: int | None = 0,
        s3: S3Options | None = None,
        temp_dir: str | None = None,
    ) -> None:
        if nodata is not None and not 0 <= nodata <= 255:
            raise ValueError(f"nodata must be in 0..255 for a uint8 mask, got {nodata}")
        self.destination = destination
        self.info = info
        self.nodata = nodata
        self.s3 = s3
        self.temp_dir = temp_dir
        self._workdir: str | None = None
        self._dataset: Any = None

    def __enter__(self) -> MaskRasterWriter:
        rasterio = import_rasterio()
        from affine import Affine

        self._workdir = tempfile.mkdtemp(prefix="mask-", dir=self.temp_dir)
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": self.info.width,
            "height": self.info.height,
            "count": 1,
            "dtype": "uint8",
            "nodata": self.nodata,
            "tiled": True,
            "blockxsize": MASK_BLOCK,
            "blockysize": MASK_BLOCK,
            "compress": "deflate",
            "zlevel": 1,  # temporary: speed over size; the COG is compressed properly
            "BIGTIFF": "IF_SAFER",
        }
        if self.info.crs is not None:
            profile["crs"] = self.info.crs
        if self.info.is_georeferenced:
            profile["transform"] = Affine(*self.info.transform)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._dataset = rasterio.open(os.path.join(self._workdir, "staging.tif"), "w", **profile)
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        return self

    def write(self, window: Window, mask: np.ndarray) -> None:
        """Write an (h, w) uint8 mask at window (y0, x0, y1, x1)."""
        if self._dataset is None:
            raise RuntimeError("MaskRasterWriter.write() outside its `with` block")
        check_window(window, self.info.height, self.info.width, self.destination)
        y0, x0, y1, x1 = window
        if mask.shape != (y1 - y0, x1 - x0) or mask.dtype != np.uint8:
            raise ValueError(
                f"{self.destination}: window {window} needs a {(y1 - y0, x1 - x0)} uint8 mask, "
                f"got {mask.dtype} {mask.shape}"
            )
        self._dataset.write(mask, 1, window=rasterio_window(window))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._workdir is not None
        try:
            dataset, self._dataset = self._dataset, None
            if exc_type is None:
                dataset.close()
                self._publish(os.path.join(self._workdir, "staging.tif"))
            else:
                with contextlib.suppress(Exception):
                    dataset.close()
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _publish(self, staging: str) -> None:
        assert self._workdir is not None
        publish_cog(staging, self.destination, self.s3, self._workdir, COG_OPTIONS)
        logger.info("wrote COG mask %s (%d x %d)", self.destination, self.info.width, self.info.height)


def publish_cog(
    source: str,
    destination: str,
    s3: S3Options | None,
    workdir: str,
    options: Mapping[str, str | int] = COG_OPTIONS,
) -> None:
    """Convert the local raster ``source`` with GDAL's COG driver and publish it atomically at ``destination``.

    Local destinations are written to a hidden file beside the target, fsynced and renamed over
    it; others (``s3://`` ...) are written into ``workdir`` and uploaded in one streamed put,
    which S3 makes visible only when complete. On failure nothing is published and the hidden
    file is removed (``workdir`` is the caller's to clean).
    """
    rasterio = import_rasterio()
    fs, path = storage.filesystem(destination, s3)
    local = storage.uri_scheme(destination) in storage.LOCAL_SCHEMES
    if local:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cog = storage.temp_path_beside(path)
    else:
        cog = os.path.join(workdir, "mask.cog.tif")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            rasterio.shutil.copy(source, cog, driver="COG", **options)
        if local:
            with open(cog, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(cog, path)
        else:
            with storage.translated_errors(destination, s3):
                fs.put_file(cog, path)  # streamed; multipart for large files
    except BaseException:
        if local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cog)
        raise


def write_geotiff_mask(
    uri: str,
    info: RasterInfo,
    mask: np.ndarray,
    nodata: int | None = 0,
    s3: S3Options | None = None,
) -> None:
    """Write a whole (height, width) uint8 mask as a COG in one go; for small rasters and tests."""
    with MaskRasterWriter(uri, info, nodata=nodata, s3=s3) as writer:
        writer.write((0, 0, info.height, info.width), mask)

"""Reading one window of a scene as model input: three 8-bit channels and where the data is valid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from connectors.raster.band_scaling import BandScaling, to_uint8
from connectors.raster.band_selection import resolve_bands
from connectors.raster.opening import open_raster, unless_the_store_failed
from connectors.raster.valid_pixels import valid_mask
from connectors.raster.windows import Window, check_window, rasterio_window
from connectors.storage import S3Options


def read_window(
    uri: str,
    window: Window,
    bands: Sequence[int] | None = None,
    scale: BandScaling | None = None,
    s3: S3Options | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read window (y0, x0, y1, x1) of ``uri`` as model input: (h, w, 3) uint8 and (h, w) valid.

    Only the window is read. ``bands`` are 1-based (e.g. ``[3, 2, 1]``); None picks
    ``default_bands``. uint8 data is returned as is; other dtypes (uint16, int16, float32 ...)
    are mapped to 8 bits with ``scale`` (required; see ``compute_band_scaling``). ``valid`` is
    False where any selected band is nodata, NaN or masked (alpha band, internal mask);
    those pixels are 0 in the image so callers can write nodata back.
    """

    def read() -> tuple[np.ndarray, np.ndarray]:
        with open_raster(uri, s3) as dataset:
            check_window(window, dataset.height, dataset.width, uri)
            chosen = resolve_bands(bands, dataset.count, uri)
            unique = sorted(set(chosen))
            gdal_window = rasterio_window(window)
            data = dataset.read(unique, window=gdal_window)
            valid = valid_mask(dataset, unique, data, window=gdal_window)
        selected = data[[unique.index(b) for b in chosen]]
        image = to_uint8(selected, scale, uri)
        image[~valid] = 0
        return image, valid

    return unless_the_store_failed(uri, s3, read)

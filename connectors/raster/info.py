"""A scene's metadata (size, bands, CRS, transform, nodata, tiling), read from its headers alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.raster.opening import open_raster, unless_the_store_failed
from connectors.storage import S3Options

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class RasterInfo:
    """What the job needs to know about a scene; plain data, so it pickles to Ray workers.

    ``transform`` is the affine in rasterio/``affine`` order (a, b, c, d, e, f), i.e.
    ``x = a*col + b*row + c`` and ``y = d*col + e*row + f``; ``Affine(*info.transform)``
    rebuilds it (GDAL's geotransform is (c, a, b, f, d, e)). ``nodata`` is band 1's value.
    ``block_shapes`` holds (rows, cols) per band. A raster georeferenced only by GCPs
    reports ``is_georeferenced=False``.
    """

    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    is_georeferenced: bool
    block_shapes: tuple[tuple[int, int], ...]
    driver: str = "GTiff"

    @property
    def dtype(self) -> str:
        """The first band's dtype (scenes have one dtype in practice)."""
        return self.dtypes[0]


def _info_of(dataset: Any) -> RasterInfo:
    a, b, c, d, e, f = (float(v) for v in dataset.transform[:6])
    transform = (a, b, c, d, e, f)
    crs = dataset.crs.to_wkt() if dataset.crs else None
    return RasterInfo(
        width=int(dataset.width),
        height=int(dataset.height),
        count=int(dataset.count),
        dtypes=tuple(str(d) for d in dataset.dtypes),
        crs=crs,
        transform=transform,
        nodata=None if dataset.nodata is None else float(dataset.nodata),
        is_georeferenced=crs is not None or transform != _IDENTITY,
        block_shapes=tuple((int(r), int(c)) for r, c in dataset.block_shapes),
        driver=str(dataset.driver),
    )


def read_info(uri: str, s3: S3Options | None = None) -> RasterInfo:
    """Metadata of the raster at ``uri``; reads headers only, never pixels."""

    def read() -> RasterInfo:
        with open_raster(uri, s3) as dataset:
            return _info_of(dataset)

    return unless_the_store_failed(uri, s3, read)

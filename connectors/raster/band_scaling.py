"""8-bit scaling of a scene's bands: one percentile stretch per scene, applied identically to every chunk.

Computed once by the driver from a bounded sample of pixels, so chunks cut from one scene never
differ in brightness where they meet.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from connectors.raster.band_selection import resolve_bands
from connectors.raster.gdal_env import import_rasterio
from connectors.raster.opening import open_raster
from connectors.raster.valid_pixels import valid_mask
from connectors.storage import S3Options

logger = logging.getLogger(__name__)

SCALING_WINDOW = 256


@dataclass(frozen=True)
class BandScaling:
    """Linear map of each output channel to 8 bits: ``low`` -> 0, ``high`` -> 255, clipped.

    One value per output channel (three, in the order of the selected bands), stored as tuples
    of floats so the object is hashable and JSON-friendly. It is computed once per scene so that
    every chunk of the scene is scaled identically; a band with ``high == low`` becomes a step.
    """

    low: Sequence[float]
    high: Sequence[float]

    def __post_init__(self) -> None:
        low = tuple(float(v) for v in self.low)
        high = tuple(float(v) for v in self.high)
        if len(low) != len(high) or not low:
            raise ValueError(f"BandScaling needs as many low as high values, got {low} and {high}")
        if any(
            not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo for lo, hi in zip(low, high, strict=True)
        ):
            raise ValueError(f"BandScaling needs finite values with high >= low, got {low} and {high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def identity(cls, channels: int = 3) -> BandScaling:
        """0..255 unchanged: what 8-bit inputs get."""
        return cls(low=(0.0,) * channels, high=(255.0,) * channels)


def to_uint8(data: np.ndarray, scale: BandScaling | None, uri: str) -> np.ndarray:
    """(3, h, w) of any dtype -> (h, w, 3) uint8; 8-bit data passes unchanged."""
    if data.dtype == np.uint8:
        return np.ascontiguousarray(np.moveaxis(data, 0, -1))
    if scale is None:
        raise ValueError(
            f"{uri}: {data.dtype} bands need a BandScaling to become 8-bit; compute one per scene "
            "with compute_band_scaling"
        )
    if len(scale.low) != data.shape[0]:
        raise ValueError(f"{uri}: BandScaling has {len(scale.low)} channels, expected {data.shape[0]}")
    out = np.empty((*data.shape[1:], data.shape[0]), np.uint8)
    for c, (low, high) in enumerate(zip(scale.low, scale.high, strict=True)):
        band = data[c].astype(np.float32)
        if data.dtype.kind == "f":
            np.nan_to_num(band, copy=False, nan=low, posinf=high, neginf=low)
        if high > low:
            band -= low
            band *= 255.0 / (high - low)
            np.clip(band, 0.0, 255.0, out=band)
            band += 0.5
            out[..., c] = band.astype(np.uint8)
        else:  # a constant band: a step at its value
            out[..., c] = np.where(band > low, 255, 0)
    return out


def _sample_windows(height: int, width: int, max_samples: int) -> list[Any]:
    """A regular grid of SCALING_WINDOW-sized windows covering about ``max_samples`` pixels."""
    rasterio = import_rasterio()
    side = min(SCALING_WINDOW, height, width)
    per_axis = max(1, math.isqrt(max(1, max_samples // (side * side))))
    rows = np.linspace(0, height - side, num=per_axis).round().astype(int)
    cols = np.linspace(0, width - side, num=per_axis).round().astype(int)
    return [
        rasterio.windows.Window(int(c), int(r), side, side)
        for r in sorted(set(rows))
        for c in sorted(set(cols))
    ]


def compute_band_scaling(
    uri: str,
    bands: Sequence[int] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    s3: S3Options | None = None,
    max_samples: int = 1024 * 1024,
) -> BandScaling:
    """Per-band percentile stretch for the whole scene, from a bounded sample of its pixels.

    About ``max_samples`` pixels are read, nodata and masked pixels ignored: the whole raster
    when it is that small; a decimated read served by overviews when the file has them;
    otherwise a regular grid of ``SCALING_WINDOW``-pixel windows spread over the scene. (A
    decimated read of a file without overviews decodes every block, several times over with a
    bounded block cache: 39 s for a 6000 x 6000 scene, against 0.3 s for the windows.)
    8-bit scenes get the identity scaling without reading pixels.
    """
    lo_pct, hi_pct = percentiles
    if not 0.0 <= lo_pct < hi_pct <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    rasterio = import_rasterio()
    from rasterio.enums import Resampling

    with open_raster(uri, s3) as dataset:
        chosen = resolve_bands(bands, dataset.count, uri)
        unique = sorted(set(chosen))
        if all(dataset.dtypes[b - 1] == "uint8" for b in unique):
            return BandScaling.identity(len(chosen))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            if dataset.width * dataset.height <= max_samples or dataset.overviews(unique[0]):
                factor = max(1.0, math.sqrt(dataset.width * dataset.height / max_samples))
                out_shape = (
                    len(unique),
                    max(1, round(dataset.height / factor)),
                    max(1, round(dataset.width / factor)),
                )
                data = dataset.read(unique, out_shape=out_shape, resampling=Resampling.nearest)
                valid = valid_mask(dataset, unique, data, out_shape=out_shape)
            else:
                reads = [
                    (part, valid_mask(dataset, unique, part, window=window))
                    for window in _sample_windows(dataset.height, dataset.width, max_samples)
                    for part in [dataset.read(unique, window=window)]
                ]
                data = np.concatenate([p.reshape(len(unique), -1) for p, _ in reads], axis=1)[:, None, :]
                valid = np.concatenate([v.ravel() for _, v in reads])[None, :]
    if not valid.any():
        raise ValueError(f"{uri}: no valid pixels in bands {chosen} to compute a scaling from")
    stats = {b: np.percentile(data[i][valid], [lo_pct, hi_pct]) for i, b in enumerate(unique)}
    low = [float(stats[b][0]) for b in chosen]
    high = [float(stats[b][1]) for b in chosen]
    logger.debug("scaling for %s bands %s: low %s high %s", uri, chosen, low, high)
    return BandScaling(low=tuple(low), high=tuple(high))

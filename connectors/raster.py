"""Windowed raster I/O for scenes far larger than memory: GeoTIFF/COG in, Cloud-Optimised GeoTIFF out.

A scene is never held whole by any worker. The driver reads its metadata (``read_info``),
plans chunks (``plan_chunks``) and fixes one 8-bit scaling for the whole scene
(``compute_band_scaling``, from a decimated read); each worker reads one chunk's window
(``read_window``), segments it and stages the chunk's core (``write_chunk``); finally
``assemble_mask`` streams the staged cores into a tiled GeoTIFF and converts it to a COG with the
input's CRS and transform (``MaskRasterWriter``). CRS and affine maths live here, never in
``birefnet_core``, which only sees pixel windows.

Supported inputs: anything GDAL opens, addressed by local path, ``file://``, ``s3://`` (read
through GDAL's ``/vsis3/`` with the endpoint and credentials of ``S3Options``) or any other
fsspec URI such as ``memory://`` (read through a Python file object). Windowed reads are efficient
for TIFF, BigTIFF, GeoTIFF and COG; GDAL decodes PNG and JPEG sequentially, so a window of a huge
PNG/JPEG costs a decode of every row above it - convert such images to a tiled TIFF first.
Plain (non-georeferenced) TIFFs work the same way, and their masks come out as plain tiled TIFFs.

rasterio is an optional dependency (``pip install 'birefnet-ray[geo]'``), imported on first use,
so the pure parts (``plan_chunks``, the dataclasses) work without it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from connectors import storage
from connectors.images import encode_mask_png
from connectors.storage import S3Options

logger = logging.getLogger(__name__)

__all__ = [
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
    "plan_chunks",
    "read_chunk",
    "read_info",
    "read_window",
    "resolve_bands",
    "write_chunk",
    "write_geotiff_mask",
]

#: Tile size of the mask outputs (staging GTiff and COG); chunk sizes that are multiples of it
#: keep every window write block-aligned, so no compressed tile is ever rewritten.
MASK_BLOCK = 512
#: GDAL's block cache (MB). Its default, 5% of RAM, would let a worker's memory grow with the scene.
GDAL_CACHE_MB = 256

#: COG creation options; AVERAGE overviews keep soft mask edges and skip nodata pixels.
COG_OPTIONS: dict[str, str | int] = {
    "COMPRESS": "DEFLATE",
    "OVERVIEWS": "AUTO",
    "OVERVIEW_RESAMPLING": "AVERAGE",
    "BLOCKSIZE": MASK_BLOCK,
    "BIGTIFF": "IF_SAFER",
}

T = TypeVar("T")

Window = tuple[int, int, int, int]
"""A pixel window (y0, x0, y1, x1): rows y0..y1-1 and columns x0..x1-1."""


class RasterReadError(ValueError):
    """The object exists but GDAL cannot open or read it as a raster."""


def _rasterio() -> ModuleType:
    """Import rasterio on first use, with an error that says what to install."""
    # GDAL sizes its block cache once, from this, at first use (also for the mask writer).
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    try:
        import rasterio
        import rasterio.shutil  # submodules used below: the COG copy and windows
        import rasterio.windows
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Raster scenes need rasterio; install it with `pip install 'birefnet-ray[geo]'`."
        ) from exc
    return rasterio


# --- metadata --------------------------------------------------------------------------------


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


_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _gdal_s3_options(s3: S3Options | None) -> dict[str, str]:
    """GDAL config options that make ``/vsis3/`` talk to the store ``s3`` describes.

    Unset credentials leave GDAL's own AWS chain (environment, ~/.aws, instance metadata).
    GDAL ignores ``AWS_ENDPOINT_URL``, which botocore (hence ``storage``) honours, so it is
    translated here to keep both readers on the same endpoint.

    GDAL retries 429/5xx and timed-out or reset connections (not refused ones), multiplying its
    delay by 2 to 2.5 after each retry without a cap; n retries from a 1 s delay so wait at least
    2**n - 1 s, and the fewest that cover ``s3.retry_seconds`` are allowed.
    """
    s3 = s3 or S3Options()
    max_retry = math.ceil(math.log2(s3.retry_seconds + 1))
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no bucket listing per open
        "GDAL_HTTP_MAX_RETRY": str(max_retry),
        "GDAL_HTTP_RETRY_DELAY": "1",
    }
    endpoint = s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
        options["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"  # path-style, as SeaweedFS/MinIO need
    if s3.anon:
        options["AWS_NO_SIGN_REQUEST"] = "YES"
    elif s3.key is not None and s3.secret is not None:
        options["AWS_ACCESS_KEY_ID"] = s3.key
        options["AWS_SECRET_ACCESS_KEY"] = s3.secret.get_secret_value()
    if s3.region is not None:
        options["AWS_REGION"] = s3.region
    return options


_CREDENTIAL_OPTIONS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@functools.cache
def _credentials_session_class() -> type:
    """A rasterio Session that hands fixed key/secret to GDAL.

    ``rasterio.Env`` refuses AWS credentials as plain config options and its own AWSSession
    needs boto3, which this project does not install (s3fs uses aiobotocore); a session is
    the supported way in.
    """
    from rasterio.session import Session

    class _FixedCredentials(Session):
        def __init__(self, options: dict[str, str]) -> None:
            self._options = dict(options)

        @classmethod
        def hascreds(cls, config: dict[str, Any]) -> bool:
            return all(key in config for key in _CREDENTIAL_OPTIONS)

        @property
        def credentials(self) -> dict[str, str]:
            return dict(self._options)

        def get_credential_options(self) -> dict[str, str]:
            return dict(self._options)

    return _FixedCredentials


def _env(s3: S3Options | None) -> Any:
    """A ``rasterio.Env`` configured for ``s3`` (see ``_gdal_s3_options``)."""
    rasterio = _rasterio()
    options = _gdal_s3_options(s3)
    credentials = {key: options.pop(key) for key in _CREDENTIAL_OPTIONS if key in options}
    if credentials:
        return rasterio.Env(
            GDAL_CACHEMAX=GDAL_CACHE_MB, session=_credentials_session_class()(credentials), **options
        )
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, **options)


@contextlib.contextmanager
def _open(uri: str, s3: S3Options | None = None) -> Iterator[Any]:
    """Open ``uri`` read-only; every failure names the URI.

    A missing object raises FileNotFoundError and rejected credentials StorageAuthError (as in
    ``storage``); anything GDAL cannot read raises RasterReadError.
    """
    rasterio = _rasterio()
    scheme = storage.uri_scheme(uri)
    fs, path = storage.filesystem(uri, s3)
    if scheme in storage.S3_SCHEMES:
        env, target, kwargs = _env(s3), f"/vsis3/{path}", {}
    elif scheme in storage.LOCAL_SCHEMES:
        env, target, kwargs = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), path, {}
    else:
        env, target, kwargs = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), path, {"opener": fs.open}
    with env, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            dataset = rasterio.open(target, **kwargs)
        except rasterio.errors.RasterioIOError as exc:
            # Ask storage why: it raises the documented FileNotFoundError / StorageAuthError.
            storage.open_input(uri, s3).close()
            raise RasterReadError(f"{uri}: not a readable raster ({exc})") from exc
        with dataset:
            try:
                yield dataset
            except rasterio.errors.RasterioIOError as exc:
                raise RasterReadError(f"{uri}: read failed ({exc})") from exc


def _info_of(dataset: Any) -> RasterInfo:
    transform = tuple(float(v) for v in dataset.transform[:6])
    crs = dataset.crs.to_wkt() if dataset.crs else None
    return RasterInfo(
        width=int(dataset.width),
        height=int(dataset.height),
        count=int(dataset.count),
        dtypes=tuple(str(d) for d in dataset.dtypes),
        crs=crs,
        transform=transform,  # type: ignore[arg-type]
        nodata=None if dataset.nodata is None else float(dataset.nodata),
        is_georeferenced=crs is not None or transform != _IDENTITY,
        block_shapes=tuple((int(r), int(c)) for r, c in dataset.block_shapes),
        driver=str(dataset.driver),
    )


def _unless_the_store_failed(uri: str, s3: S3Options | None, read: Callable[[], T]) -> T:
    """Run a GDAL read; when it fails on S3, ask storage whether the store answers (an outage
    raises StorageUnavailableError there) and, if it does, read once more before blaming the
    raster: GDAL reports a dropped connection and a corrupt file alike."""
    try:
        return read()
    except RasterReadError:
        if storage.uri_scheme(uri) not in storage.S3_SCHEMES:
            raise
        storage.open_input(uri, s3).close()
        return read()


def read_info(uri: str, s3: S3Options | None = None) -> RasterInfo:
    """Metadata of the raster at ``uri``; reads headers only, never pixels."""

    def read() -> RasterInfo:
        with _open(uri, s3) as dataset:
            return _info_of(dataset)

    return _unless_the_store_failed(uri, s3, read)


# --- chunk plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One unit of work: ``read`` is the window to segment, ``core`` the part of it to keep.

    Windows are (y0, x0, y1, x1). The halo around the core gives the model context so that
    predictions at core edges do not depend on where the scene was cut.
    """

    row: int
    col: int
    core: Window
    read: Window

    @property
    def core_in_read(self) -> Window:
        """The core relative to the read window: ``prediction[y0:y1, x0:x1]`` keeps it."""
        ry0, rx0 = self.read[0], self.read[1]
        y0, x0, y1, x1 = self.core
        return (y0 - ry0, x0 - rx0, y1 - ry0, x1 - rx0)


def plan_chunks(height: int, width: int, chunk_size: int, halo: int) -> list[Chunk]:
    """Cut a height x width raster into chunks, row-major.

    Cores tile the raster exactly without overlap: core (r, c) covers rows
    ``[r*chunk_size, min(height, (r+1)*chunk_size))`` and likewise columns, so the last row
    and column of chunks may be smaller. ``read`` is the core grown by ``halo`` on every side
    and clipped to the raster. The number of chunks is
    ``ceil(height / chunk_size) * ceil(width / chunk_size)``.

    Choose ``chunk_size`` as a multiple of ``MASK_BLOCK`` (512) so mask writes stay aligned
    with the output's tiles.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"raster size must be positive, got {height} x {width}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    chunks = []
    for row in range(math.ceil(height / chunk_size)):
        for col in range(math.ceil(width / chunk_size)):
            y0, x0 = row * chunk_size, col * chunk_size
            y1, x1 = min(height, y0 + chunk_size), min(width, x0 + chunk_size)
            read = (max(0, y0 - halo), max(0, x0 - halo), min(height, y1 + halo), min(width, x1 + halo))
            chunks.append(Chunk(row=row, col=col, core=(y0, x0, y1, x1), read=read))
    return chunks


# --- reading ---------------------------------------------------------------------------------


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


def default_bands(count: int) -> list[int]:
    """1-based bands that make the 3-channel model input when none are chosen.

    One band is repeated as grey; two bands (e.g. grey + alpha, or an odd SAR pair) use band 1
    as grey, since no colour order can be guessed; three or more use bands 1-3 (RGB, RGBA,
    RGB + NIR ...). Multispectral scenes in another order (e.g. Sentinel-2's B2, B3, B4 =
    blue, green, red) should pass their bands explicitly, e.g. ``[3, 2, 1]``.
    """
    if count <= 0:
        raise ValueError(f"raster has no bands (count={count})")
    return [1, 2, 3] if count >= 3 else [1, 1, 1]


def resolve_bands(bands: Sequence[int] | None, count: int, uri: str = "raster") -> list[int]:
    """The three 1-based bands to read: ``default_bands`` for None, one band repeated, or three."""
    if bands is None:
        return default_bands(count)
    chosen = [int(b) for b in bands]
    if len(chosen) == 1:
        chosen *= 3
    if len(chosen) != 3:
        raise ValueError(f"{uri}: choose one or three bands, got {list(bands)}")
    if any(not 1 <= b <= count for b in chosen):
        raise ValueError(f"{uri}: bands {list(bands)} out of range; the raster has bands 1..{count}")
    return chosen


def _check_window(window: Window, height: int, width: int, uri: str) -> None:
    y0, x0, y1, x1 = window
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"{uri}: window {window} is empty or outside the {height} x {width} raster")


def _valid_mask(
    dataset: Any, bands: list[int], data: np.ndarray, window: Any = None, out_shape: Any = None
) -> np.ndarray:
    """True where every band in ``bands`` holds data (``data`` is their read, same order).

    Nodata values are compared on the data already read; alpha bands and internal/external
    masks need GDAL's mask read. NaN never counts as data, even without a declared nodata.
    """
    from rasterio.enums import MaskFlags

    valid = np.ones(data.shape[1:], bool)
    needs_mask_read: list[int] = []
    for i, band in enumerate(bands):
        flags = dataset.mask_flag_enums[band - 1]
        nodata = dataset.nodatavals[band - 1]
        if nodata is not None:
            valid &= ~np.isnan(data[i]) if np.isnan(nodata) else data[i] != nodata
        if data.dtype.kind == "f":
            valid &= ~np.isnan(data[i])
        if MaskFlags.all_valid not in flags and MaskFlags.nodata not in flags:
            needs_mask_read.append(band)
    if needs_mask_read and all(
        MaskFlags.per_dataset in dataset.mask_flag_enums[b - 1] for b in needs_mask_read
    ):
        needs_mask_read = needs_mask_read[:1]  # alpha or dataset mask: one read serves every band
    if needs_mask_read:
        shape = None if out_shape is None else (len(needs_mask_read), *out_shape[-2:])
        masks = dataset.read_masks(needs_mask_read, window=window, out_shape=shape)
        valid &= (masks != 0).all(axis=0)
    return valid


def _to_uint8(data: np.ndarray, scale: BandScaling | None, uri: str) -> np.ndarray:
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
        with _open(uri, s3) as dataset:
            _check_window(window, dataset.height, dataset.width, uri)
            chosen = resolve_bands(bands, dataset.count, uri)
            unique = sorted(set(chosen))
            y0, x0, y1, x1 = window
            gdal_window = _rasterio().windows.Window(x0, y0, x1 - x0, y1 - y0)
            data = dataset.read(unique, window=gdal_window)
            valid = _valid_mask(dataset, unique, data, window=gdal_window)
        selected = data[[unique.index(b) for b in chosen]]
        image = _to_uint8(selected, scale, uri)
        image[~valid] = 0
        return image, valid

    return _unless_the_store_failed(uri, s3, read)


SCALING_WINDOW = 256


def _sample_windows(height: int, width: int, max_samples: int) -> list[Any]:
    """A regular grid of SCALING_WINDOW-sized windows covering about ``max_samples`` pixels."""
    rasterio = _rasterio()
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
    rasterio = _rasterio()
    from rasterio.enums import Resampling

    with _open(uri, s3) as dataset:
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
                valid = _valid_mask(dataset, unique, data, out_shape=out_shape)
            else:
                reads = [
                    (part, _valid_mask(dataset, unique, part, window=window))
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


# --- writing ---------------------------------------------------------------------------------


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
        rasterio = _rasterio()
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
        _check_window(window, self.info.height, self.info.width, self.destination)
        y0, x0, y1, x1 = window
        if mask.shape != (y1 - y0, x1 - x0) or mask.dtype != np.uint8:
            raise ValueError(
                f"{self.destination}: window {window} needs a {(y1 - y0, x1 - x0)} uint8 mask, "
                f"got {mask.dtype} {mask.shape}"
            )
        self._dataset.write(mask, 1, window=_rasterio().windows.Window(x0, y0, x1 - x0, y1 - y0))

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
        rasterio = _rasterio()
        fs, path = storage.filesystem(self.destination, self.s3)
        local = storage.uri_scheme(self.destination) in storage.LOCAL_SCHEMES
        if local:
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            cog = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        else:
            assert self._workdir is not None
            cog = os.path.join(self._workdir, "mask.cog.tif")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                rasterio.shutil.copy(staging, cog, driver="COG", **COG_OPTIONS)
            if local:
                with open(cog, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(cog, path)
            else:
                with storage.translated_errors(self.destination, self.s3):
                    fs.put_file(cog, path)  # streamed; multipart for large files
        except BaseException:
            if local:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cog)
            raise
        logger.info("wrote COG mask %s (%d x %d)", self.destination, self.info.width, self.info.height)


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


# --- staged chunks ---------------------------------------------------------------------------


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
    rasterio = _rasterio()
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
        _check_window(core, info.height, info.width, "mask")
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

"""Opening a raster by URI, so every GDAL failure names the URI and says whether the store or the file is at fault."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from connectors import storage
from connectors.raster.gdal_env import import_rasterio, local_env, s3_env
from connectors.storage import S3Options

T = TypeVar("T")


class RasterReadError(ValueError):
    """The object exists but GDAL cannot open or read it as a raster."""


@contextlib.contextmanager
def open_raster(uri: str, s3: S3Options | None = None) -> Iterator[Any]:
    """Open ``uri`` read-only; every failure names the URI.

    A missing object raises FileNotFoundError and rejected credentials StorageAuthError (as in
    ``storage``); anything GDAL cannot read raises RasterReadError.
    """
    rasterio = import_rasterio()
    scheme = storage.uri_scheme(uri)
    fs, path = storage.filesystem(uri, s3)
    if scheme in storage.S3_SCHEMES:
        env, target, kwargs = s3_env(s3), f"/vsis3/{path}", cast(dict[str, Any], {})
    elif scheme in storage.LOCAL_SCHEMES:
        env, target, kwargs = local_env(), path, {}
    else:
        env, target, kwargs = local_env(), path, {"opener": fs.open}
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


def unless_the_store_failed(uri: str, s3: S3Options | None, read: Callable[[], T]) -> T:
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

"""GDAL's environment for raster reads and writes: the lazy rasterio import and S3 access for ``/vsis3/``.

GDAL does not read ``S3Options`` or botocore's settings, so everything it needs to reach the same
store as ``connectors.storage`` (endpoint, credentials, retries) is translated here.
"""

from __future__ import annotations

import functools
import math
import os
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from connectors.storage import S3Options

#: GDAL's block cache (MB). Its default, 5% of RAM, would let a worker's memory grow with the scene.
GDAL_CACHE_MB = 256

_CREDENTIAL_OPTIONS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def import_rasterio() -> ModuleType:
    """Import rasterio on first use, with an error that says what to install."""
    # GDAL sizes its block cache once, from this, at first use (also for the mask writer).
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    try:
        import rasterio
        import rasterio.shutil  # submodules used by the package: the COG copy and windows
        import rasterio.windows
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Raster scenes need rasterio; install it with `pip install 'birefnet-ray[geo]'`."
        ) from exc
    return rasterio


def gdal_s3_options(s3: S3Options | None) -> dict[str, str]:
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


def local_env() -> Any:
    """A ``rasterio.Env`` for local and fsspec-served files: the bounded block cache only."""
    return import_rasterio().Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def s3_env(s3: S3Options | None) -> Any:
    """A ``rasterio.Env`` configured for ``s3`` (see ``gdal_s3_options``)."""
    rasterio = import_rasterio()
    options = gdal_s3_options(s3)
    credentials = {key: options.pop(key) for key in _CREDENTIAL_OPTIONS if key in options}
    if credentials:
        return rasterio.Env(
            GDAL_CACHEMAX=GDAL_CACHE_MB, session=_credentials_session_class()(credentials), **options
        )
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, **options)

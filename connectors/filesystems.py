"""Which fsspec filesystem serves a URI, and the S3 connection settings it is built with.

s3fs is imported only when an ``s3://`` URI is used, so local and ``memory://`` jobs run without it.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.uris import LOCAL_SCHEMES, MEMORY_SCHEMES, S3_SCHEMES, uri_scheme

# One attempt is bounded (botocore's own retries and timeouts kept short), so a paused store
# cannot hold a call for minutes: waiting out outages is ``connectors.storage``'s job.
_ATTEMPT_LIMITS = {
    "connect_timeout": 10,
    "read_timeout": 60,
    "retries": {"max_attempts": 2, "mode": "standard"},
}


class S3Options(BaseModel):
    """Connection settings for S3-compatible stores.

    Leaving ``key``/``secret`` unset keeps the standard AWS discovery chain (environment,
    shared credentials file, instance profile), which is what clusters normally rely on.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint, e.g. http://127.0.0.1:8333 for SeaweedFS; None means AWS (or AWS_ENDPOINT_URL).",
    )
    key: str | None = Field(
        default=None, description="Access key id; None falls back to the standard AWS credential chain."
    )
    secret: SecretStr | None = Field(
        default=None,
        description="Secret access key; None falls back to the standard AWS credential chain.",
    )
    region: str | None = Field(
        default=None, description="Region used to sign requests; None uses the AWS default."
    )
    anon: bool = Field(default=False, description="Send unsigned requests (public buckets only).")
    retry_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long to keep retrying transient S3 faults (outage, timeouts, 5xx, throttling) "
        "before StorageUnavailableError; 0 tries once.",
    )

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem``; unset fields are omitted so botocore can discover them."""
        options: dict[str, Any] = {"anon": self.anon}
        if self.endpoint_url is not None:
            options["endpoint_url"] = self.endpoint_url
        if self.key is not None:
            options["key"] = self.key
        if self.secret is not None:
            options["secret"] = self.secret.get_secret_value()
        if self.region is not None:
            options["client_kwargs"] = {"region_name": self.region}
        return options


def filesystem(uri: str, s3: S3Options | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem serving ``uri`` and the path inside it.

    Instances come from fsspec's own cache (keyed by the options), so calling this per file is cheap
    and each worker process keeps one S3 connection pool. Local paths are made absolute because
    Ray workers may not share the driver's working directory.
    """
    scheme = uri_scheme(uri)
    if scheme in LOCAL_SCHEMES:
        fs = fsspec.filesystem("file")
        local = uri.partition("://")[2] if scheme else uri
        return fs, os.path.abspath(os.path.expanduser(local))
    if scheme in MEMORY_SCHEMES:
        fs = fsspec.filesystem("memory")
        return fs, fs._strip_protocol(uri)
    if scheme in S3_SCHEMES:
        try:
            import s3fs
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"Reading {uri} needs s3fs; install it with `pip install 'birefnet-ray[s3]'`."
            ) from exc
        # No listings cache: other workers write concurrently, and a cached listing would hand
        # open() a stale size for an object rewritten since it was listed.
        fs = s3fs.S3FileSystem(
            use_listings_cache=False, config_kwargs=_ATTEMPT_LIMITS, **(s3 or S3Options()).storage_options()
        )
        fs.retries = 1  # a class attribute (5), not an argument
        return fs, fs._strip_protocol(uri)
    raise ValueError(
        f"Unsupported URI scheme {scheme!r} in {uri!r}; supported: local paths, file://, memory://, s3://, s3a://."
    )


def arrow_filesystem(uri: str, s3: S3Options | None = None) -> tuple[Any, str]:
    """``uri`` as a pyarrow filesystem and the path inside it, for libraries that take one (Ray Train).

    Local folders get pyarrow's own filesystem; S3 goes through the same s3fs instance (endpoint,
    credentials, retries) as every other read and write here.
    """
    import pyarrow.fs

    fs, path = filesystem(uri, s3)
    if uri_scheme(uri) in LOCAL_SCHEMES:
        return pyarrow.fs.LocalFileSystem(), path
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path

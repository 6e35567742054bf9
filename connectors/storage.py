"""Byte-level storage for batch jobs: reads, atomic writes and listings on local folders, ``memory://`` and S3.

Jobs address everything by URI so that the same code runs on a laptop folder, in tests
(``memory://``) and against any S3 endpoint (AWS, SeaweedFS, MinIO, ...). The backend is
chosen by URI scheme (``connectors.filesystems``); URI spelling lives in ``connectors.uris``.
Both are re-exported here, so callers need one import for storage.

Error contract, so callers can tell a typo from a credentials problem:

* a missing object raises ``FileNotFoundError`` whose message names the full URI;
* credentials that S3 rejects raise ``StorageAuthError`` (a ``PermissionError``) naming
  the endpoint and bucket;
* an S3 store that stays unreachable (refused connections, timeouts, 5xx, throttling) for
  ``S3Options.retry_seconds`` raises ``StorageUnavailableError`` (an ``OSError``) naming the
  endpoint and URI. Shorter outages are retried away (see ``connectors.retry``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, NoReturn, TypeVar, cast

import fsspec

from connectors.filesystems import S3Options, filesystem
from connectors.retry import RetryPolicy, StorageUnavailableError
from connectors.uris import (
    LOCAL_SCHEMES,
    MEMORY_SCHEMES,
    S3_SCHEMES,
    SUPPORTED_SCHEMES,
    join_uri,
    safe_output_uri,
    uri_scheme,
)

__all__ = [
    "LOCAL_SCHEMES",
    "MEMORY_SCHEMES",
    "S3_SCHEMES",
    "SUPPORTED_SCHEMES",
    "FileEntry",
    "S3Options",
    "StorageAuthError",
    "StorageUnavailableError",
    "call_with_retries",
    "exists",
    "file_info",
    "filesystem",
    "join_uri",
    "list_files",
    "list_folder",
    "normalise_extensions",
    "open_input",
    "read_bytes",
    "remove_interrupted_writes",
    "safe_output_uri",
    "temp_path_beside",
    "translated_errors",
    "uri_scheme",
    "version_tag",
    "write_bytes_atomic",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Error codes S3 returns when the key pair itself is wrong (as opposed to missing permissions).
_REJECTED_CREDENTIAL_CODES = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId", "ExpiredToken", "InvalidToken"}
)


class StorageAuthError(PermissionError):
    """S3 refused the request because of the credentials; raised instead of a bare 403."""


def _bucket_of(uri: str) -> str:
    return uri.partition("://")[2].split("/", 1)[0]


def _endpoint_of(s3: S3Options | None) -> str:
    return (s3.endpoint_url if s3 else None) or "the default AWS endpoint"


def _raise_translated(exc: BaseException, uri: str, s3: S3Options | None) -> NoReturn:
    """Re-raise ``exc`` as the module's documented error, naming ``uri``."""
    if isinstance(exc, FileNotFoundError):
        raise FileNotFoundError(errno.ENOENT, "No such file or object", uri) from exc
    if uri_scheme(uri) in S3_SCHEMES:
        endpoint = _endpoint_of(s3)
        bucket = _bucket_of(uri)
        if isinstance(exc, PermissionError):
            response = getattr(exc.__cause__, "response", None) or {}
            code = response.get("Error", {}).get("Code") or str(exc) or "AccessDenied"
            if code in _REJECTED_CREDENTIAL_CODES:
                reason = "the credentials were rejected"
            else:
                # HEAD requests carry no error body, so a bad secret only shows up as a bare 403 here.
                reason = "the credentials were rejected or lack permission"
            raise StorageAuthError(
                errno.EACCES,
                f"S3 at {endpoint} refused access to bucket '{bucket}': {reason} ({code}); "
                "check the access key, secret and bucket policy",
                uri,
            ) from exc
        from botocore.exceptions import NoCredentialsError  # installed with s3fs, which served this fs

        if isinstance(exc, NoCredentialsError):
            raise StorageAuthError(
                errno.EACCES,
                f"No S3 credentials found for bucket '{bucket}' at {endpoint}: set S3Options.key/secret, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile, or anon=True for public buckets",
                uri,
            ) from exc
    raise exc


@contextlib.contextmanager
def translated_errors(uri: str, s3: S3Options | None) -> Iterator[None]:
    """Raise what fails inside the block as the module's documented errors, naming ``uri``."""
    try:
        yield
    except Exception as exc:
        _raise_translated(exc, uri, s3)


def call_with_retries(action: str, uri: str, s3: S3Options | None, operation: Callable[[], T]) -> T:
    """Run one storage call under the module's error contract, retrying transient S3 faults.

    Local and memory filesystems have no outages worth waiting out, so they are called once.
    ``operation`` must be safe to repeat from scratch: a retry re-sends a whole request.
    """
    with translated_errors(uri, s3):
        if uri_scheme(uri) not in S3_SCHEMES:
            return operation()
        policy = RetryPolicy(window_s=(s3 or S3Options()).retry_seconds)
        return policy.call(operation, store=f"S3 at {_endpoint_of(s3)}", action=f"{action} {uri}")


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Like ``fs.exists`` but only "not found" means False: s3fs answers False for a bucket it cannot reach."""
    try:
        fs.info(path)
    except FileNotFoundError:
        return False
    return True


def open_input(uri: str, s3: S3Options | None = None) -> IO[bytes]:
    """Open ``uri`` for binary reading; the handle is a context manager and streams from S3.

    Only the open is retried; reads of the open handle rely on s3fs's own retries.
    """
    fs, path = filesystem(uri, s3)
    return cast(IO[bytes], call_with_retries("opening", uri, s3, lambda: fs.open(path, "rb")))


def read_bytes(uri: str, s3: S3Options | None = None) -> bytes:
    """Read the whole object at ``uri`` (images are small enough to decode from memory)."""
    fs, path = filesystem(uri, s3)
    return cast(bytes, call_with_retries("reading", uri, s3, lambda: fs.cat_file(path)))


def file_info(uri: str, s3: S3Options | None = None) -> dict[str, Any]:
    """fsspec's ``info`` for ``uri`` (size, ETag or mtime, type), with this module's errors and retries."""
    fs, path = filesystem(uri, s3)
    return cast(dict[str, Any], call_with_retries("checking", uri, s3, lambda: fs.info(path)))


def exists(uri: str, s3: S3Options | None = None) -> bool:
    """Whether ``uri`` names a file or directory; an unreachable store raises instead of answering False."""
    fs, path = filesystem(uri, s3)
    return call_with_retries("checking", uri, s3, lambda: _exists(fs, path))


_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


def temp_path_beside(path: str) -> str:
    """A hidden, unique temp file name in ``path``'s directory, for write-then-rename.

    Beside the target so the rename stays on one filesystem; the pattern is the one
    ``remove_interrupted_writes`` recognises.
    """
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")


def remove_interrupted_writes(uri: str, older_than: float) -> int:
    """Delete the temp files that killed writers left under local folder ``uri``; returns how many.

    A process killed between creating its temp file and the rename (SIGKILL, node loss) cannot
    clean up after itself. Only files named by ``temp_path_beside`` and last modified before
    ``older_than`` (a POSIX time; a job passes its own start) are removed, so writes of the
    run that sweeps are never touched. S3 and memory writes leave no temp files.
    """
    if uri_scheme(uri) not in LOCAL_SCHEMES:
        return 0
    _, root = filesystem(uri)
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                if _TEMP_NAME.match(name) and os.stat(path).st_mtime < older_than:
                    os.unlink(path)
                    removed += 1
    return removed


def _write_local_atomic(path: str, data: bytes) -> None:
    """Write via a hidden temp file in the target directory, then rename over ``path``.

    The temp file lives beside the target so ``os.replace`` is a same-filesystem rename (atomic
    on POSIX); it is created with mode 0o666 so the umask applies as for any normal file.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_path_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(uri: str, data: bytes, s3: S3Options | None = None) -> None:
    """Write ``data`` to ``uri`` so readers see either the old object or the complete new one.

    Jobs are retried and resumed; a half-written mask must never look like a finished output.
    Local files go through temp file + rename; an S3 PUT (or completed multipart upload) is
    atomic by itself, and memory writes are too.
    """
    fs, path = filesystem(uri, s3)
    if uri_scheme(uri) in LOCAL_SCHEMES:
        write = functools.partial(_write_local_atomic, path, data)
    else:
        write = functools.partial(fs.pipe_file, path, data)  # a retry re-sends the whole object
    call_with_retries("writing", uri, s3, write)
    logger.debug("wrote %d bytes to %s", len(data), uri)


@dataclass(frozen=True)
class FileEntry:
    """One listed object; ``mtime_or_etag`` lets a job detect inputs that changed since a previous run."""

    uri: str
    relative_path: str
    size: int
    mtime_or_etag: str


def normalise_extensions(extensions: set[str] | None) -> frozenset[str] | None:
    """Extensions as listings compare them: lower case with a leading dot; None keeps everything."""
    if extensions is None:
        return None
    return frozenset("." + ext.lower().lstrip(".") for ext in extensions)


def version_tag(info: dict[str, Any]) -> str:
    """ETag for S3 (quotes stripped), otherwise the modification time as ISO-8601 UTC."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    stamp = info.get("mtime", info.get("created", info.get("LastModified")))
    if isinstance(stamp, datetime):
        return stamp.astimezone(UTC).isoformat()
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp, tz=UTC).isoformat()
    return ""


def list_files(
    root_uri: str, extensions: set[str] | None = None, s3: S3Options | None = None
) -> list[FileEntry]:
    """List files under ``root_uri`` recursively, sorted by relative path.

    ``extensions`` (e.g. ``{"jpg", ".PNG"}``) match case-insensitively; None keeps everything.
    Directory entries and S3 "folder marker" keys ending in "/" are skipped. A root that does not
    exist raises FileNotFoundError rather than silently yielding nothing. A retry redoes the whole
    listing, so a listing interrupted by an outage is never returned half-done.
    """
    fs, root_path = filesystem(root_uri, s3)
    root_path = root_path.rstrip("/")
    wanted = normalise_extensions(extensions)
    base = root_uri if uri_scheme(root_uri) else root_path
    base = base if base.endswith("://") else base.rstrip("/")
    prefix = f"{root_path}/"

    def find() -> tuple[list[FileEntry], bool]:
        found = cast(dict[str, dict[str, Any]], fs.find(root_path, detail=True))
        entries: list[FileEntry] = []
        for name, info in found.items():
            if info.get("type") == "directory" or name.endswith("/") or not name.startswith(prefix):
                continue
            relative = name[len(prefix) :]
            if wanted is not None and posixpath.splitext(relative)[1].lower() not in wanted:
                continue
            entries.append(
                FileEntry(
                    uri=join_uri(base, relative),
                    relative_path=relative,
                    size=int(info.get("size") or 0),
                    mtime_or_etag=version_tag(info),
                )
            )
        return entries, not entries and not _exists(fs, root_path)

    entries, missing = call_with_retries("listing", root_uri, s3, find)
    if missing:
        raise FileNotFoundError(errno.ENOENT, "No such directory or prefix", root_uri)

    entries.sort(key=lambda entry: entry.relative_path)
    logger.info("listed %d files under %s", len(entries), root_uri)
    return entries


def list_folder(
    root: str, relative_dir: str, extensions: set[str], s3: S3Options | None = None
) -> tuple[list[FileEntry], list[str]]:
    """Files directly in ``root/relative_dir`` with one of ``extensions``, and its sub-folders
    (relative to ``root``): one folder of a listing that is split folder by folder."""
    folder = join_uri(root, relative_dir) if relative_dir else root
    fs, path = filesystem(folder, s3)
    wanted = normalise_extensions(extensions) or frozenset()
    base = root if uri_scheme(root) else filesystem(root, s3)[1]
    prefix = f"{relative_dir.strip('/')}/" if relative_dir.strip("/") else ""
    listed = cast(
        list[dict[str, Any]], call_with_retries("listing", folder, s3, lambda: fs.ls(path, detail=True))
    )
    files, subfolders = [], []
    for info in listed:
        leaf = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") == "directory":
            subfolders.append(prefix + leaf)
        elif posixpath.splitext(leaf)[1].lower() in wanted and not info["name"].endswith("/"):
            relative = prefix + leaf
            size = int(info.get("size") or 0)
            files.append(FileEntry(join_uri(base, relative), relative, size, version_tag(info)))
    return files, sorted(subfolders)

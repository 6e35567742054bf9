"""What a batch job processes: listing inputs (folders, prefixes, list files, tar shards) and reading them.

A job first turns its input spec into ``Source`` objects on the driver (cheap: listings and
``info()`` calls only), then reads each source on a worker into ``Record`` objects that carry
the bytes. The split keeps the driver light and lets one tar shard fan out into many images.

Per-input problems never fail the job: a listed file that is missing, a file over the size
limit, a corrupt tar or a member whose name would escape the output root all become a
``Record`` with ``data=None`` and an ``error`` naming the URI, which the job writes as an error
row in its manifest. Problems with the spec itself (a root that does not exist, an unreadable
list file, an unsupported scheme, bad credentials) raise, because no row could be right.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import lzma
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.storage import (
    LOCAL_SCHEMES,
    S3Options,
    filesystem,
    join_uri,
    list_files,
    normalise_extensions,
    open_input,
    read_bytes,
    safe_output_uri,
    translated_errors,
    uri_scheme,
    version_tag,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_INPUT_BYTES",
    "Record",
    "Source",
    "item_id",
    "list_sources",
    "read_source",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
TAR_EXTENSION = ".tar"
LIST_EXTENSIONS = frozenset({".txt", ".parquet"})

#: Largest single image (or tar member) read into memory; tar shards themselves are streamed.
MAX_INPUT_BYTES = 512 * 1024 * 1024

# info() calls for listed URIs are network round trips on S3; run them concurrently.
_STAT_THREADS = 32

# What reading one input may raise that is the input's fault, not the job's. Other exceptions
# (e.g. botocore connection errors after s3fs's own retries) propagate so Ray retries the task.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
)

SourceKind = Literal["file", "tar"]


@dataclass(frozen=True)
class Source:
    """One listed input: an image file, or a tar shard that holds many images.

    ``relative_path`` decides where outputs go (via ``safe_output_uri``); ``version`` is the S3
    ETag or local mtime, so an incremental run can tell a changed input from a processed one.
    ``size`` is -1 (and ``version`` "") for a listed input that did not exist at listing time.
    """

    uri: str
    relative_path: str
    size: int
    version: str
    kind: SourceKind


@dataclass(frozen=True)
class Record:
    """One image to segment, or the error that stopped it from being read (then ``data`` is None)."""

    id: str
    uri: str
    relative_path: str
    version: str
    size: int
    data: bytes | None
    error: str | None


def item_id(uri: str) -> str:
    """Stable id of an input: the first 16 hex digits of the SHA-1 of its URI.

    Tar members are identified by ``"<shard uri>#<member>"``, so they get ids of their own.
    """
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


def _suffix(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def _kind(uri: str) -> SourceKind:
    return "tar" if _suffix(uri) == TAR_EXTENSION else "file"


def list_sources(
    spec: str, s3: S3Options | None = None, extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[Source]:
    """Turn an input spec into sources, sorted and de-duplicated by URI.

    ``spec`` is either

    * a folder: a local path, ``s3://bucket/prefix`` or ``memory://...``, listed recursively for
      image files (``extensions``, case-insensitive) and ``.tar`` shards; or
    * a list file ending in ``.txt`` (one URI or path per line; blank lines and lines starting
      with ``#`` are ignored) or ``.parquet`` (column ``uri``, else the first string column).
      Relative entries are resolved against the list file's folder, so a list can travel with
      its data. Listed inputs are taken as given (no extension filter); those ending in ``.tar``
      are shards. Their ``relative_path`` is the URI without its scheme (``s3://b/a.jpg`` ->
      ``b/a.jpg``, ``/data/x.jpg`` -> ``data/x.jpg``), so outputs stay put when the list changes.
      A listed input that does not exist does not fail the listing: it gets ``size=-1`` and
      ``read_source`` turns it into an error record.

    Raises ValueError when nothing is found, FileNotFoundError when the spec does not exist.
    """
    if _suffix(spec.rstrip("/")) in LIST_EXTENSIONS:
        sources = _sources_from_list(spec, s3)
        if not sources:
            raise ValueError(f"no inputs listed in {spec}")
    else:
        sources = _sources_from_folder(spec, s3, extensions)
        if not sources:
            wanted = ", ".join(sorted(normalise_extensions(set(extensions)) or ()))
            raise ValueError(f"no images found under {spec} (looked for {wanted} files and .tar shards)")
    logger.info("%s: %d sources (%d tar shards)", spec, len(sources), sum(s.kind == "tar" for s in sources))
    return sources


def _sources_from_folder(spec: str, s3: S3Options | None, extensions: Iterable[str]) -> list[Source]:
    wanted = set(extensions) | {TAR_EXTENSION}
    entries = list_files(spec, wanted, s3=s3)
    by_uri = {
        entry.uri: Source(
            uri=entry.uri,
            relative_path=entry.relative_path,
            size=entry.size,
            version=entry.mtime_or_etag,
            kind=_kind(entry.relative_path),
        )
        for entry in entries
    }
    return [by_uri[uri] for uri in sorted(by_uri)]


def _listed_entries(list_uri: str, s3: S3Options | None) -> list[tuple[str, str]]:
    """(where in the list, raw entry) pairs from a .txt or .parquet list file."""
    data = read_bytes(list_uri, s3=s3)
    if _suffix(list_uri) == ".txt":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{list_uri}: list file is not UTF-8 text ({exc})") from None
        return [
            (f"line {number}", line.strip())
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.strip().startswith("#")
        ]
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{list_uri}: cannot read the Parquet list ({exc})") from None
    string_columns = [
        f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    if "uri" in table.column_names:
        if "uri" not in string_columns:
            raise ValueError(
                f"{list_uri}: column 'uri' has type {table.schema.field('uri').type}, expected string"
            )
        column = "uri"
    elif string_columns:
        column = string_columns[0]
    else:
        raise ValueError(f"{list_uri}: no 'uri' or other string column among {table.column_names}")
    return [
        (f"row {number}", value.strip())
        for number, value in enumerate(table.column(column).to_pylist())
        if value is not None and value.strip()
    ]


def _resolve_listed(entry: str, list_uri: str) -> str:
    """Absolute URI for a list entry; local paths become plain absolute paths so ids do not depend on spelling."""
    scheme = uri_scheme(entry)
    if scheme and scheme not in LOCAL_SCHEMES:
        return entry
    path = entry.partition("://")[2] if scheme else entry
    path = os.path.expanduser(path)
    list_scheme = uri_scheme(list_uri)
    if os.path.isabs(path):
        return os.path.normpath(path)
    if list_scheme in LOCAL_SCHEMES:
        _, list_path = filesystem(list_uri)
        return os.path.normpath(os.path.join(os.path.dirname(list_path), path))
    list_rest = list_uri.partition("://")[2]
    folder = posixpath.normpath(posixpath.join(posixpath.dirname(list_rest), path))
    if folder == ".." or folder.startswith("../"):
        raise ValueError(f"{list_uri}: entry {entry!r} points above the root of {list_scheme}://")
    return join_uri(f"{list_scheme}://", folder.lstrip("/"))


def _relative_of_uri(uri: str) -> str:
    """``s3://bucket/a/b.jpg`` -> ``bucket/a/b.jpg``; ``/data/x.jpg`` -> ``data/x.jpg``."""
    rest = uri.partition("://")[2] if uri_scheme(uri) else uri
    return posixpath.normpath(rest).lstrip("/")


def _stat(uri: str, s3: S3Options | None) -> tuple[int, str]:
    """(size, version) of a listed input, or (-1, "") when it does not exist; other errors raise."""
    fs, path = filesystem(uri, s3)
    try:
        with translated_errors(uri, s3):
            info: dict[str, Any] = fs.info(path)
    except FileNotFoundError:
        return -1, ""
    return int(info.get("size") or 0), version_tag(info)


def _sources_from_list(list_uri: str, s3: S3Options | None) -> list[Source]:
    uris: dict[str, str] = {}
    for where, entry in _listed_entries(list_uri, s3):
        uri = _resolve_listed(entry, list_uri)
        try:
            filesystem(uri, s3)
        except ValueError as exc:
            raise ValueError(f"{list_uri} {where}: {exc}") from None
        uris.setdefault(uri, where)

    ordered = sorted(uris)
    claimed: dict[str, str] = {}
    for uri in ordered:
        relative = _relative_of_uri(uri)
        if relative in claimed:
            raise ValueError(
                f"{list_uri}: {claimed[relative]} and {uri} would both be written as {relative!r}; "
                "list each input once, with one spelling"
            )
        claimed[relative] = uri

    with ThreadPoolExecutor(max_workers=max(1, min(_STAT_THREADS, len(ordered)))) as pool:
        stats = list(pool.map(lambda uri: _stat(uri, s3), ordered))
    missing = [uri for uri, (size, _) in zip(ordered, stats, strict=True) if size < 0]
    if missing:
        logger.warning("%s: %d listed inputs do not exist, e.g. %s", list_uri, len(missing), missing[0])
    return [
        Source(uri=uri, relative_path=_relative_of_uri(uri), size=size, version=version, kind=_kind(uri))
        for uri, (size, version) in zip(ordered, stats, strict=True)
    ]


def _error(uri: str, relative_path: str, version: str, size: int, message: str) -> Record:
    return Record(
        id=item_id(uri),
        uri=uri,
        relative_path=relative_path,
        version=version,
        size=size,
        data=None,
        error=f"{uri}: {message}",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return f"cannot read ({type(exc).__name__}: {exc})"


def _size(size: int) -> str:
    return f"{size} bytes" if size < 2**20 else f"{size / 2**20:.1f} MiB"


def read_source(
    source: Source,
    s3: S3Options | None = None,
    max_bytes: int = MAX_INPUT_BYTES,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[Record]:
    """Read a source into records: one for a file, one per image member for a tar shard.

    Tar members get the URI ``"<shard uri>#<member>"`` and the relative path
    ``"<shard relative path without .tar>/<member>"``; directories and members whose names do
    not end in one of ``extensions`` are skipped. Nothing here raises for a bad input: see the
    module docstring. A shard that breaks part-way yields the members read so far plus one
    error record for the shard itself.
    """
    if source.kind == "tar":
        return _read_tar(source, s3, max_bytes, extensions)
    return [_read_file(source, s3, max_bytes)]


def _read_file(source: Source, s3: S3Options | None, max_bytes: int) -> Record:
    def error(message: str, size: int = source.size) -> Record:
        return _error(source.uri, source.relative_path, source.version, size, message)

    if source.size > max_bytes:
        return error(f"{_size(source.size)} exceeds the {_size(max_bytes)} input size limit")
    try:
        if source.size >= 0:
            data = read_bytes(source.uri, s3=s3)
        else:
            # Unknown size (missing when listed): never pull more than the limit into memory.
            with open_input(source.uri, s3=s3) as handle:
                data = handle.read(max_bytes + 1)
    except _READ_ERRORS as exc:
        return error(_describe(exc))
    if len(data) > max_bytes:
        return error(f"more than {_size(max_bytes)}, exceeds the input size limit", size=len(data))
    return Record(
        id=item_id(source.uri),
        uri=source.uri,
        relative_path=source.relative_path,
        version=source.version,
        size=len(data),
        data=data,
        error=None,
    )


def _shard_stem(relative_path: str) -> str:
    stem = relative_path[: -len(TAR_EXTENSION)] if _suffix(relative_path) == TAR_EXTENSION else relative_path
    return stem or "shard"


def _read_tar(
    source: Source, s3: S3Options | None, max_bytes: int, extensions: Iterable[str]
) -> list[Record]:
    wanted = normalise_extensions(set(extensions)) or frozenset()
    stem = _shard_stem(source.relative_path)
    # A name may repeat in a tar (appended updates); as with extraction, the last one wins.
    records: dict[str, Record] = {}
    members_seen = 0
    current = ""
    try:
        # Stream mode ("r|"): one sequential pass, no seeks, so an S3 shard is never buffered whole.
        with (
            open_input(source.uri, s3=s3) as handle,
            tarfile.open(fileobj=handle, mode="r|*") as archive,
        ):
            for member in archive:
                current = member.name
                members_seen += 1
                for record in _member_records(source, stem, archive, member, wanted, max_bytes):
                    records[record.uri] = record
                current = ""
    except _READ_ERRORS as exc:
        if isinstance(exc, tarfile.TarError | EOFError | zlib.error | lzma.LZMAError):
            where = f" while reading member {current!r}" if current else ""
            message = f"corrupt or truncated tar after {members_seen - bool(current)} members{where} ({exc})"
        else:
            message = _describe(exc)
        logger.warning("%s: %s", source.uri, message)
        records[source.uri] = _error(source.uri, source.relative_path, source.version, source.size, message)
    return list(records.values())


def _member_records(
    source: Source,
    stem: str,
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    wanted: frozenset[str],
    max_bytes: int,
) -> Iterator[Record]:
    """Zero or one record for one tar member (a generator so the caller's loop stays flat)."""
    if member.isdir() or _suffix(member.name) not in wanted:
        return
    try:
        relative = safe_output_uri(stem, member.name)
    except ValueError as exc:
        uri = f"{source.uri}#{member.name}"
        # The member cannot be placed under the shard; the stem is a safe, recognisable stand-in.
        yield _error(uri, stem, source.version, member.size, f"unsafe member name ({exc})")
        return
    member_name = posixpath.normpath(member.name)
    uri = f"{source.uri}#{member_name}"

    def error(message: str) -> Record:
        return _error(uri, relative, source.version, member.size, message)

    if not member.isfile():
        yield error("tar member is a link or special file, not a regular file")
    elif member.size > max_bytes:
        yield error(f"{_size(member.size)} exceeds the {_size(max_bytes)} input size limit")
    else:
        extracted = archive.extractfile(member)
        if extracted is None:  # pragma: no cover - isfile() members always extract
            raise OSError(errno.EIO, "tar member has no data", uri)
        yield Record(
            id=item_id(uri),
            uri=uri,
            relative_path=relative,
            version=source.version,
            size=member.size,
            data=extracted.read(),
            error=None,
        )

"""Reading listed inputs on workers: one ``Record`` per image file or tar member, with its bytes.

Per-input problems never fail the job: a listed file that is missing, a file over the size
limit, a corrupt tar, a member whose name would escape the output root, or an input the output
collision rule gave no name all become a ``Record`` with ``data=None`` and an ``error`` naming
the URI, which the job writes as an error row in its manifest.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import lzma
import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from connectors.layout import collision_message, output_names
from connectors.sources import IMAGE_EXTENSIONS, TAR_EXTENSION, Source, extension_of, item_id, output_name
from connectors.storage import (
    S3Options,
    StorageUnavailableError,
    normalise_extensions,
    open_input,
    read_bytes,
    safe_output_uri,
)

__all__ = ["MAX_INPUT_BYTES", "Record", "read_source"]

logger = logging.getLogger(__name__)

#: Largest single image (or tar member) read into memory; tar shards themselves are streamed.
MAX_INPUT_BYTES = 512 * 1024 * 1024

# What reading one input may raise that is the input's fault, not the job's. An unreachable
# store (StorageUnavailableError, after storage's retries) propagates and stops the job.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
)


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
    name: str = ""
    """Where the outputs go (``connectors.layout``); "" for error records."""
    box: str = ""
    """The box guiding its mask, as listed (``Source.box``); "" for none."""


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
        record = _error(source.uri, source.relative_path, source.version, size, message)
        return dataclasses.replace(record, box=source.box)

    name = output_name(source)
    if not name:
        return error(collision_message(source.relative_path))
    if source.size > max_bytes:
        return error(f"{_size(source.size)} exceeds the {_size(max_bytes)} input size limit")
    try:
        if source.size >= 0:
            data = read_bytes(source.uri, s3=s3)
        else:
            # Unknown size (missing when listed): never pull more than the limit into memory.
            with open_input(source.uri, s3=s3) as handle:
                data = handle.read(max_bytes + 1)
    except StorageUnavailableError:
        raise  # the store is down: not this input's fault, so no error row
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
        name=name,
        box=source.box,
    )


def _shard_stem(relative_path: str) -> str:
    stem = (
        relative_path[: -len(TAR_EXTENSION)]
        if extension_of(relative_path) == TAR_EXTENSION
        else relative_path
    )
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
    except StorageUnavailableError:
        raise  # the store is down: not this input's fault, so no error row
    except _READ_ERRORS as exc:
        if isinstance(exc, tarfile.TarError | EOFError | zlib.error | lzma.LZMAError):
            where = f" while reading member {current!r}" if current else ""
            message = f"corrupt or truncated tar after {members_seen - bool(current)} members{where} ({exc})"
        else:
            message = _describe(exc)
        logger.warning("%s: %s", source.uri, message)
        records[source.uri] = _error(source.uri, source.relative_path, source.version, source.size, message)
    return _named_members(list(records.values()))


def _named_members(records: list[Record]) -> list[Record]:
    """Output names for a shard's members: the shard holds every rival under the collision rule."""
    readable = [r for r in records if r.error is None]
    names = dict(
        zip((r.uri for r in readable), output_names([r.relative_path for r in readable]), strict=True)
    )
    named = []
    for record in records:
        name = names.get(record.uri)
        if record.error is None and not name:
            record = dataclasses.replace(
                record, data=None, error=f"{record.uri}: {collision_message(record.relative_path)}"
            )
        named.append(dataclasses.replace(record, name=name or ""))
    return named


def _member_records(
    source: Source,
    stem: str,
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    wanted: frozenset[str],
    max_bytes: int,
) -> Iterator[Record]:
    """Zero or one record for one tar member (a generator so the caller's loop stays flat)."""
    if member.isdir() or extension_of(member.name) not in wanted:
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

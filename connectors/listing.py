"""What a batch job processes: listing inputs (folders, prefixes, list files, tar shards) as ``Source`` rows.

Listing is cheap metadata only (names, sizes, versions); ``connectors.inputs`` reads the bytes
on workers. Folders are listed one folder at a time (``list_directory``), so a job can fan a
huge tree out over many tasks and the driver never holds the listing; every folder holds all
rivals of its files under the output collision rule, so names come out the same either way.
The rows themselves are ``connectors.sources`` and list files ``connectors.uri_lists``; both are
re-exported here, so a job needs one import for its listing.

Problems with the spec itself (a root that does not exist, an unreadable list file, an
unsupported scheme, bad credentials) raise, because no row could be right. A listed input that
does not exist is not a listing problem: it gets ``size=-1`` and becomes an error row when read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from connectors.sources import (
    IMAGE_EXTENSIONS,
    LIST_EXTENSIONS,
    SCENE_EXTENSIONS,
    SCENE_IF_LARGE_EXTENSIONS,
    SOURCE_SCHEMA,
    TAR_EXTENSION,
    Source,
    extension_of,
    item_id,
    kind_of,
    named,
    output_name,
    source_of_row,
    sources_table,
)
from connectors.storage import FileEntry, S3Options, list_files, list_folder, normalise_extensions
from connectors.uri_lists import (
    ListColumns,
    ParquetList,
    open_parquet_list,
    parquet_list_columns,
    read_parquet_list,
    sources_from_list,
    sources_from_parquet_rows,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LIST_EXTENSIONS",
    "SCENE_EXTENSIONS",
    "SCENE_IF_LARGE_EXTENSIONS",
    "SOURCE_SCHEMA",
    "TAR_EXTENSION",
    "ListColumns",
    "ParquetList",
    "Source",
    "extension_of",
    "item_id",
    "list_directory",
    "list_sources",
    "named",
    "open_parquet_list",
    "output_name",
    "parquet_list_columns",
    "read_parquet_list",
    "source_of_row",
    "sources_from_parquet_rows",
    "sources_table",
]

logger = logging.getLogger(__name__)


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
    if extension_of(spec.rstrip("/")) in LIST_EXTENSIONS:
        sources = sources_from_list(spec, s3)
        if not sources:
            raise ValueError(f"no inputs listed in {spec}")
    else:
        sources = _sources_from_folder(spec, s3, extensions)
        if not sources:
            wanted = ", ".join(sorted(normalise_extensions(set(extensions)) or ()))
            raise ValueError(f"no images found under {spec} (looked for {wanted} files and .tar shards)")
    logger.info("%s: %d sources (%d tar shards)", spec, len(sources), sum(s.kind == "tar" for s in sources))
    return sources


def _source_of(entry: FileEntry) -> Source:
    return Source(
        uri=entry.uri,
        relative_path=entry.relative_path,
        size=entry.size,
        version=entry.mtime_or_etag,
        kind=kind_of(entry.relative_path),
    )


def _sources_from_folder(spec: str, s3: S3Options | None, extensions: Iterable[str]) -> list[Source]:
    wanted = set(extensions) | {TAR_EXTENSION}
    by_uri = {entry.uri: _source_of(entry) for entry in list_files(spec, wanted, s3=s3)}
    return named([by_uri[uri] for uri in sorted(by_uri)])


def list_directory(
    root: str, relative_dir: str, s3: S3Options | None = None, extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> tuple[list[Source], list[str]]:
    """One folder of a listing, not recursive: its inputs (named) and its sub-folders (relative).

    A folder holds every rival of its files under the collision rule, so listings split by
    folder, e.g. one task per folder, name outputs exactly as a listing of the whole tree.
    """
    entries, subfolders = list_folder(root, relative_dir, set(extensions) | {TAR_EXTENSION}, s3=s3)
    return named(sorted((_source_of(e) for e in entries), key=lambda s: s.uri)), subfolders

"""Inputs named by a list file: ``.txt`` (one URI per line) or ``.parquet`` (a URI column, or an S3 Inventory).

Entries are resolved against the list's own folder, so a list can travel with its data, and
Parquet lists are read a row group at a time, so a list of millions of inputs never passes
through one process whole.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.manifest import DoneIndex
from connectors.sources import Source, extension_of, item_id, kind_of, named, sources_table
from connectors.storage import (
    LOCAL_SCHEMES,
    S3Options,
    file_info,
    filesystem,
    join_uri,
    open_input,
    read_bytes,
    uri_scheme,
    version_tag,
)

logger = logging.getLogger(__name__)

# info() calls for listed URIs are network round trips on S3; run them concurrently.
_STAT_THREADS = 32


def _uri_column(schema: pa.Schema, list_uri: str) -> str:
    """The list's URI column: ``uri``, else its first string column."""
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    if "uri" in schema.names:
        if "uri" not in strings:
            raise ValueError(f"{list_uri}: column 'uri' has type {schema.field('uri').type}, expected string")
        return "uri"
    if strings:
        return strings[0]
    raise ValueError(f"{list_uri}: no 'uri' or other string column among {schema.names}")


@dataclass(frozen=True)
class ListColumns:
    """Which columns of a Parquet list to read. An S3 Inventory export has ``bucket`` and ``key``
    instead of a URI, and ``size`` and ``e_tag``: with both of those no input needs a look-up."""

    uri: str | None = None
    bucket: str | None = None
    key: str | None = None
    size: str | None = None
    version: str | None = None
    box: str | None = None
    """An optional column of boxes that guide each input's mask: ``"x0,y0,x1,y1"`` strings or
    lists of four numbers, null for none."""

    @property
    def names(self) -> tuple[str, ...]:
        fields = (self.uri, self.bucket, self.key, self.size, self.version, self.box)
        return tuple(name for name in fields if name)


_VERSION_COLUMNS = ("version", "etag", "e_tag", "ETag")


def _box_column(schema: pa.Schema, list_uri: str) -> str | None:
    if "box" not in schema.names:
        return None
    kind = schema.field("box").type
    numbers = pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or numbers):
        raise ValueError(f"{list_uri}: column 'box' has type {kind}, expected 'x0,y0,x1,y1' strings or lists")
    return "box"


def list_columns(schema: pa.Schema, list_uri: str) -> ListColumns:
    names = set(schema.names)
    size = "size" if "size" in names and pa.types.is_integer(schema.field("size").type) else None
    version = next((c for c in _VERSION_COLUMNS if c in names), None)
    stats = {"size": size, "version": version} if size and version else {}
    box = _box_column(schema, list_uri)
    if "uri" not in names and {"bucket", "key"} <= names:
        return ListColumns(bucket="bucket", key="key", box=box, **stats)
    return ListColumns(uri=_uri_column(schema, list_uri), box=box, **stats)


@dataclass(frozen=True)
class ParquetList:
    """What a worker needs to read its share of a Parquet list: the columns and how many row
    groups there are (one task per row group, so a large list is read in parallel)."""

    uri: str
    columns: ListColumns
    row_groups: int
    rows: int


def parquet_list_columns(list_uri: str, s3: S3Options | None = None) -> ListColumns:
    """The columns to read from a Parquet list, from its footer alone."""
    return open_parquet_list(list_uri, s3).columns


def open_parquet_list(list_uri: str, s3: S3Options | None = None) -> ParquetList:
    """A Parquet list's footer: the columns to read and its row groups."""
    try:
        with open_input(list_uri, s3) as handle:
            metadata = pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise ValueError(f"{list_uri}: cannot read the Parquet list ({exc})") from None
    columns = list_columns(metadata.schema.to_arrow_schema(), list_uri)
    return ParquetList(list_uri, columns, metadata.num_row_groups, metadata.num_rows)


def read_parquet_list(
    listing: ParquetList, row_group: int, batch_rows: int, s3: S3Options | None = None
) -> Iterator[pa.Table]:
    """One row group of a Parquet list, only the columns it needs, in batches of ``batch_rows``."""
    with open_input(listing.uri, s3) as handle:
        reader = pq.ParquetFile(handle)
        for batch in reader.iter_batches(
            batch_rows, row_groups=[row_group], columns=list(listing.columns.names)
        ):
            yield pa.Table.from_batches([batch])


def _column_values(table: pa.Table, columns: ListColumns) -> list[str | None]:
    if columns.uri:
        return table.column(columns.uri).to_pylist()
    buckets, keys = table.column(columns.bucket).to_pylist(), table.column(columns.key).to_pylist()
    return [f"s3://{b}/{k}" if b and k else None for b, k in zip(buckets, keys, strict=True)]


def _box_values(table: pa.Table, columns: ListColumns) -> list[str]:
    """Each row's box as ``x0,y0,x1,y1`` text ("" for none); checked where the image is read."""
    if not columns.box:
        return [""] * table.num_rows
    return [
        ",".join(str(v) for v in box) if isinstance(box, list) else (box or "").strip()
        for box in table.column(columns.box).to_pylist()
    ]


def _listed_entries(list_uri: str, s3: S3Options | None) -> list[tuple[str, str]]:
    """(where in the list, raw entry) pairs from a .txt or .parquet list file."""
    data = read_bytes(list_uri, s3=s3)
    if extension_of(list_uri) == ".txt":
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
    values = _column_values(table, list_columns(table.schema, list_uri))
    return [
        (f"row {number}", value.strip())
        for number, value in enumerate(values)
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
    try:
        info = file_info(uri, s3)
    except FileNotFoundError:
        return -1, ""
    return int(info.get("size") or 0), version_tag(info)


def sources_from_list(list_uri: str, s3: S3Options | None) -> list[Source]:
    """Every input a ``.txt`` or ``.parquet`` list file names, sorted, named and looked up."""
    return _sources_of_entries(list_uri, _listed_entries(list_uri, s3), s3)


def sources_from_parquet_rows(
    table: pa.Table,
    list_uri: str,
    columns: ListColumns,
    s3: S3Options | None = None,
    done: DoneIndex | None = None,
) -> tuple[pa.Table, int]:
    """One block of a Parquet list as the sources left to do, and how many ``done`` dropped.

    Sizes and versions come from the list when it has them, else from a look-up per input
    (left to do only). Output names are decided within the block: a sorted list (an S3
    Inventory is) keeps a folder's files together.
    """
    values = _column_values(table, columns)
    boxes = _box_values(table, columns)
    present = {i: v.strip() for i, v in enumerate(values) if v is not None and v.strip()}
    keep = list(present)
    listed_stats = bool(columns.size and columns.version)
    if listed_stats:
        sizes = table.column(columns.size).to_pylist()
        versions = [str(v or "").strip('"') for v in table.column(columns.version).to_pylist()]
    skipped = 0
    if listed_stats and done is not None and len(done):
        uris = [_resolve_listed(present[i], list_uri) for i in keep]
        finished = done.is_done([item_id(u) for u in uris], [versions[i] for i in keep])
        skipped = int(finished.sum())
        keep = [i for i, f in zip(keep, finished, strict=True) if not f]
    entries = [(f"entry {values[i]!r}", present[i]) for i in keep]
    stats = None
    if listed_stats:
        stats = {present[i]: (int(sizes[i]) if sizes[i] is not None else -1, versions[i]) for i in keep}
    listed_boxes = {present[i]: boxes[i] for i in keep if boxes[i]}
    return sources_table(_sources_of_entries(list_uri, entries, s3, stats, listed_boxes)), skipped


def _sources_of_entries(
    list_uri: str,
    entries: Sequence[tuple[str, str]],
    s3: S3Options | None,
    known: Mapping[str, tuple[int, str]] | None = None,
    boxes: Mapping[str, str] | None = None,
) -> list[Source]:
    uris: dict[str, str] = {}
    raw: dict[str, str] = {}
    for where, entry in entries:
        uri = _resolve_listed(entry, list_uri)
        try:
            filesystem(uri, s3)
        except ValueError as exc:
            raise ValueError(f"{list_uri} {where}: {exc}") from None
        uris.setdefault(uri, where)
        raw.setdefault(uri, entry)

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

    if known is not None:
        stats = [known[raw[uri]] for uri in ordered]
    else:
        with ThreadPoolExecutor(max_workers=max(1, min(_STAT_THREADS, len(ordered)))) as pool:
            stats = list(pool.map(lambda uri: _stat(uri, s3), ordered))
    missing = [uri for uri, (size, _) in zip(ordered, stats, strict=True) if size < 0]
    if missing:
        logger.warning("%s: %d listed inputs do not exist, e.g. %s", list_uri, len(missing), missing[0])
    return named(
        [
            Source(
                uri=uri,
                relative_path=_relative_of_uri(uri),
                size=size,
                version=version,
                kind=kind_of(uri),
                box=(boxes or {}).get(raw[uri], ""),
            )
            for uri, (size, version) in zip(ordered, stats, strict=True)
        ]
    )

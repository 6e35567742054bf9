"""Reading the manifest back: the published compacted generation plus every part, in parallel.

Parts are small (one worker batch each) and many, so they are fetched whole on a thread pool
(I/O-bound on S3; on local disk two to four threads already saturate a small VM) and only the
asked columns are decoded. Generation files are large and few, so they are opened for ranged
reads and only the asked column chunks are fetched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.manifest.layout import Pointer, list_parts, manifest_uri, part_name, read_pointer
from connectors.manifest.migration import file_columns
from connectors.manifest.schema import check_known_columns, conform, projected_schema
from connectors.storage import S3_SCHEMES, S3Options, open_input, read_bytes, uri_scheme

logger = logging.getLogger(__name__)

_LOCAL_THREADS = min(8, (os.cpu_count() or 1) + 2)
_REMOTE_THREADS = 32
# How often a read starts over when a compaction deletes files under it.
_ATTEMPTS = 5


@dataclass(frozen=True)
class Snapshot:
    """What one consistent read saw: the rows, the generation they came from, the parts read, and
    every part listed (those read plus leftovers the generation already holds)."""

    table: pa.Table
    pointer: Pointer | None
    parts: tuple[str, ...]
    listed: tuple[str, ...]


def _project(parquet: pq.ParquetFile, uri: str, schema: pa.Schema) -> pa.Table:
    """Read the file's columns that ``schema`` asks for, under their current names (see ``migration``)."""
    held = file_columns(parquet.schema_arrow.names)
    check_known_columns(held, uri)
    table = parquet.read(columns=[held[name] for name in schema.names if name in held], use_threads=False)
    seen_as = {column: name for name, column in held.items()}
    return conform(table.rename_columns([seen_as[column] for column in table.column_names]), uri, schema)


def _read_file(uri: str, schema: pa.Schema, s3: S3Options | None, ranged: bool) -> pa.Table | None:
    """One Parquet file projected to ``schema``, or None when it is gone (a compaction removed it)."""
    try:
        if ranged:
            with open_input(uri, s3) as handle:
                return _project(pq.ParquetFile(handle), uri, schema)
        return _project(pq.ParquetFile(pa.BufferReader(read_bytes(uri, s3))), uri, schema)
    except FileNotFoundError:
        return None


def _attempt(
    pool: ThreadPoolExecutor, output_root: str, schema: pa.Schema, s3: S3Options | None
) -> Snapshot | None:
    """One read of everything, or None when a compaction removed a file under it.

    Listing before reading the pointer is what makes it consistent: a listed part is either merged
    into the pointer's generation (and named in its ``merged`` set, so skipped) or not, and one
    that a later compaction deleted shows up as missing. A part written after the listing is simply
    not seen yet.
    """
    listed = list_parts(output_root, s3)
    pointer = read_pointer(output_root, s3)
    merged = pointer.merged if pointer else frozenset()
    parts = [uri for uri in listed if part_name(uri) not in merged]
    generation = [manifest_uri(output_root, name) for name in pointer.files] if pointer else []
    ranged = [pool.submit(_read_file, uri, schema, s3, True) for uri in generation]
    whole = pool.map(partial(_read_file, schema=schema, s3=s3, ranged=False), parts)
    tables = [future.result() for future in ranged] + list(whole)
    if any(table is None for table in tables):
        return None
    found = cast(list[pa.Table], tables)
    table = pa.concat_tables(found) if found else schema.empty_table()
    return Snapshot(table=table, pointer=pointer, parts=tuple(parts), listed=tuple(listed))


def read_snapshot(
    output_root: str, s3: S3Options | None = None, columns: Sequence[str] | None = None
) -> Snapshot:
    """Read the published generation and every part not merged into it; see ``read_manifest``.

    A compaction running meanwhile can delete files under the read; the read then starts over
    (a few times at most: compactions are rare).
    """
    schema = projected_schema(columns)
    threads = _REMOTE_THREADS if uri_scheme(output_root) in S3_SCHEMES else _LOCAL_THREADS
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(_ATTEMPTS):
            snapshot = _attempt(pool, output_root, schema, s3)
            if snapshot is not None:
                generation = snapshot.pointer.generation if snapshot.pointer else None
                logger.info(
                    "read manifest under %s: generation %s, %d parts",
                    output_root,
                    generation,
                    len(snapshot.parts),
                )
                return snapshot
            logger.info(
                "a compaction replaced manifest files under %s during the read; reading again", output_root
            )
    raise RuntimeError(
        f"{manifest_uri(output_root)}: compactions kept replacing files during {_ATTEMPTS} reads"
    )


def read_manifest(
    output_root: str, s3: S3Options | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """The compacted generation plus all parts under ``output_root`` as one table.

    ``columns`` picks the columns (in that order) and is the cheap way to read a big manifest;
    None reads all of MANIFEST_SCHEMA. Columns missing from older parts come back null. Only
    ``*.parquet`` parts directly under ``manifest/`` count; hidden (``.x``) and ``_x`` files such
    as temp files or ``_SUCCESS`` markers are ignored, and so are parts the compacted generation
    already holds. Rows of the generation come first, so ``latest_rows`` breaks exact ties in favour
    of parts written since. No manifest yet gives an empty table.
    """
    return read_snapshot(output_root, s3, columns).table


def latest_rows(table: pa.Table) -> pa.Table:
    """One row per ``id``: the one with the newest ``processed_at``, sorted by id.

    Rows without ``processed_at`` count as oldest; on a tie the row that comes later in
    ``table`` wins. Needs only the ``id`` and ``processed_at`` columns, so it works on projections.
    """
    if table.num_rows == 0:
        return table
    order, newest = "__manifest_row", "__manifest_time"
    # Missing times become the oldest possible, so any timed row wins over an untimed one.
    times = pc.fill_null(table.column("processed_at").cast(pa.int64()), -(2**63))
    indexed = table.append_column(order, pa.array(range(table.num_rows), pa.int64())).append_column(
        newest, times
    )
    ranked = indexed.sort_by([("id", "ascending"), (newest, "descending"), (order, "descending")])
    ids = ranked.column("id")
    first_of_id = pa.concat_arrays(
        [
            pa.array([True]),
            pc.not_equal(ids.slice(1), ids.slice(0, ranked.num_rows - 1)).combine_chunks(),
        ]
    )
    return ranked.filter(first_of_id).drop_columns([order, newest])

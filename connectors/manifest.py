"""The Parquet quality manifest: one row per input per run, written as immutable parts.

Every worker batch writes its own part file (``<output>/manifest/part-<run_id>-<uuid>.parquet``),
so there is no shared file to append to and a retried task only adds a part. Readers
concatenate the parts; an incremental re-run adds newer rows for the same ids, and
``latest_rows`` picks the newest per id. Error rows (unreadable inputs) live in the same table
with ``status="error"`` so a run's failures are queryable next to its quality metrics.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.storage import (
    S3Options,
    join_uri,
    list_files,
    read_bytes,
    safe_output_uri,
    write_bytes_atomic,
)

__all__ = [
    "MANIFEST_COLUMNS_DOC",
    "MANIFEST_DIR",
    "MANIFEST_SCHEMA",
    "completed_inputs",
    "latest_rows",
    "read_manifest",
    "write_manifest_part",
]

logger = logging.getLogger(__name__)

MANIFEST_DIR = "manifest"

_REQUIRED = frozenset({"id", "source_uri", "status", "run_id"})

MANIFEST_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field(name, dtype, nullable=name not in _REQUIRED)
        for name, dtype in [
            ("id", pa.string()),
            ("source_uri", pa.string()),
            ("relative_path", pa.string()),
            ("source_size", pa.int64()),
            ("source_version", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("mask_uri", pa.string()),
            ("cutout_uri", pa.string()),
            ("variant", pa.string()),
            ("weights", pa.string()),
            ("weights_source", pa.string()),
            ("resolution", pa.string()),
            ("dtype", pa.string()),
            ("decode_seconds", pa.float64()),
            ("infer_seconds", pa.float64()),
            ("encode_seconds", pa.float64()),
            ("mean_confidence", pa.float32()),
            ("uncertain_fraction", pa.float32()),
            ("foreground_fraction", pa.float32()),
            ("is_empty", pa.bool_()),
            ("is_full", pa.bool_()),
            ("tile_count", pa.int32()),
            ("chunk_count", pa.int32()),
            ("seam_disagreement", pa.float32()),
            ("run_id", pa.string()),
            ("processed_at", pa.timestamp("us", tz="UTC")),
        ]
    ]
)

MANIFEST_COLUMNS_DOC: dict[str, str] = {
    "id": "Stable input id: first 16 hex digits of the SHA-1 of source_uri.",
    "source_uri": "Input URI; tar members are `<shard uri>#<member name>`.",
    "relative_path": "Input path relative to the input root (or the URI without scheme for listed inputs); outputs mirror it.",
    "source_size": "Input size in bytes as listed (-1 if the input was missing when listed).",
    "source_version": "S3 ETag or local modification time of the input (of the shard for tar members); a change triggers reprocessing.",
    "width": "Decoded image width in pixels, after EXIF orientation.",
    "height": "Decoded image height in pixels, after EXIF orientation.",
    "status": "`ok` when a mask was written, `error` otherwise.",
    "error": "What went wrong, naming the input (null for `ok` rows).",
    "mask_uri": "Where the 8-bit mask PNG was written.",
    "cutout_uri": "Where the RGBA cut-out was written (null when cut-outs are off).",
    "variant": "BiRefNet variant name from the registry.",
    "weights": "SHA-256 of the weights file, or `random` for untrained smoke-test weights.",
    "weights_source": "Where the weights came from (a path or URI, the Hugging Face cache file, or `random`).",
    "resolution": "Working size the model ran at, e.g. `1024x1024`, or `dynamic`.",
    "dtype": "Inference precision, e.g. `float16`, `bfloat16`, `float32`.",
    "decode_seconds": "Time to decode and preprocess the image.",
    "infer_seconds": "This image's share of the model forward time.",
    "encode_seconds": "Time to post-process, encode and write the outputs.",
    "mean_confidence": "Mean of |2p - 1| over the mask: 1 is fully certain, 0 is a coin toss everywhere.",
    "uncertain_fraction": "Fraction of pixels with 0.1 < p < 0.9 (soft or undecided pixels).",
    "foreground_fraction": "Fraction of pixels with p >= 0.5.",
    "is_empty": "True when under 0.1% of pixels are foreground: nothing found, or a miss.",
    "is_full": "True when over 99.9% of pixels are foreground: a likely failure.",
    "tile_count": "Number of tiles the image was split into (1 when not tiled).",
    "chunk_count": "Number of chunks a huge scene was read in (1 when read whole).",
    "seam_disagreement": "Mean absolute difference between overlapping tile predictions; high values flag visible seams.",
    "run_id": "Id of the run that wrote the row.",
    "processed_at": "When the row was produced (UTC); the newest row per id wins.",
}

_PART_PREFIX = "part-"


def _column(field: pa.Field, rows: Sequence[Mapping[str, Any]]) -> pa.Array:
    values = [row.get(field.name) for row in rows]
    try:
        array = pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise ValueError(f"manifest column {field.name!r} ({field.type}): {exc}") from None
    if not field.nullable and array.null_count:
        raise ValueError(f"manifest column {field.name!r} is required but {array.null_count} rows lack it")
    return array


def _table_from_rows(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    unknown = sorted({key for row in rows for key in row} - set(MANIFEST_SCHEMA.names))
    if unknown:
        raise ValueError(f"unknown manifest columns {unknown}; known: {MANIFEST_SCHEMA.names}")
    return pa.Table.from_arrays([_column(field, rows) for field in MANIFEST_SCHEMA], schema=MANIFEST_SCHEMA)


def write_manifest_part(output_root: str, rows: list[dict], s3: S3Options | None = None) -> str:
    """Write ``rows`` as a new manifest part under ``output_root`` and return its URI.

    Rows are dicts keyed by column name; missing keys become null, unknown keys or values of
    the wrong type raise ValueError naming the column. All rows must share one ``run_id``,
    which goes into the file name. The part appears atomically (zstd-compressed Parquet), so a
    reader never sees half a part. No rows, no file: returns "".
    """
    if not rows:
        return ""
    table = _table_from_rows(rows)
    run_ids = table.column("run_id").unique().to_pylist()
    if len(run_ids) != 1:
        raise ValueError(f"manifest rows mix run ids {sorted(run_ids)}; write one part per run")
    run_id = run_ids[0]
    if not run_id or "/" in run_id or "\\" in run_id:
        raise ValueError(f"run_id {run_id!r} cannot be part of a file name")

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    uri = safe_output_uri(output_root, f"{MANIFEST_DIR}/{_PART_PREFIX}{run_id}-{uuid.uuid4().hex}.parquet")
    write_bytes_atomic(uri, buffer.getvalue(), s3=s3)
    logger.info("wrote %d manifest rows to %s", table.num_rows, uri)
    return uri


def _conform(table: pa.Table, uri: str) -> pa.Table:
    """Cast a part to MANIFEST_SCHEMA; columns missing from older parts become null."""
    unknown = sorted(set(table.column_names) - set(MANIFEST_SCHEMA.names))
    if unknown:
        raise ValueError(f"{uri}: unknown manifest columns {unknown}; written by a newer version?")
    columns = []
    for field in MANIFEST_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            try:
                columns.append(column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(
                    f"{uri}: column {field.name!r} has type {column.type}, expected {field.type} ({exc})"
                ) from None
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"{uri}: required manifest column {field.name!r} is missing")
    return pa.Table.from_arrays(columns, schema=MANIFEST_SCHEMA)


def read_manifest(output_root: str, s3: S3Options | None = None) -> pa.Table:
    """All manifest parts under ``output_root`` as one table with MANIFEST_SCHEMA.

    Only ``*.parquet`` files count; hidden (``.x``) and ``_x`` files such as temp files or
    ``_SUCCESS`` markers are ignored. No manifest yet gives an empty table.
    """
    try:
        entries = list_files(join_uri(output_root, MANIFEST_DIR), {"parquet"}, s3=s3)
    except FileNotFoundError:
        return MANIFEST_SCHEMA.empty_table()
    parts = []
    for entry in entries:
        name = entry.relative_path.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            continue
        parts.append(_conform(pq.read_table(io.BytesIO(read_bytes(entry.uri, s3=s3))), entry.uri))
    if not parts:
        return MANIFEST_SCHEMA.empty_table()
    return pa.concat_tables(parts)


def latest_rows(table: pa.Table) -> pa.Table:
    """One row per ``id``: the one with the newest ``processed_at``, sorted by id.

    Rows without ``processed_at`` count as oldest; on a tie the row that comes later in
    ``table`` wins.
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


def completed_inputs(output_root: str, s3: S3Options | None = None) -> dict[str, str]:
    """id -> source version of every input whose latest row is `ok`: what a re-run may skip."""
    latest = latest_rows(read_manifest(output_root, s3))
    done = latest.filter(pc.equal(latest.column("status"), "ok"))
    return dict(zip(done.column("id").to_pylist(), done.column("source_version").to_pylist(), strict=True))

"""The manifest's columns: their types, their documentation, and conforming tables to them.

Parts written by older versions may lack newer nullable columns, or hold renamed ones under their
old names (``migration``); every reader goes through ``conform`` so all tables handed out share
one schema (or the projection of it that was asked for).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

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
            ("weights_sha256", pa.string()),
            ("weights_source", pa.string()),
            ("resolution", pa.string()),
            ("dtype", pa.string()),
            ("backend", pa.string()),
            ("box", pa.string()),
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
    "weights_sha256": "SHA-256 of the weights file, or `random` for untrained smoke-test weights.",
    "weights_source": "Where the weights came from (a path or URI, the Hugging Face cache file, or `random`).",
    "resolution": "Working size the model ran at, e.g. `1024x1024`, or `dynamic`; for a scene, its tile size (`1024x1024`).",
    "dtype": "Inference precision, e.g. `float16`, `bfloat16`, `float32`.",
    "backend": "What ran the model: `torch`, `onnxruntime` or `tensorrt` (null in rows of older versions).",
    "box": "The `x0,y0,x1,y1` box that guided the mask (from the input list's `box` column); null for none.",
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


def _column(field: pa.Field, rows: Sequence[Mapping[str, Any]]) -> pa.Array:
    values = [row.get(field.name) for row in rows]
    try:
        array = pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise ValueError(f"manifest column {field.name!r} ({field.type}): {exc}") from None
    if not field.nullable and array.null_count:
        raise ValueError(f"manifest column {field.name!r} is required but {array.null_count} rows lack it")
    return array


def table_from_rows(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows keyed by column name as a MANIFEST_SCHEMA table; bad names or types raise ValueError."""
    unknown = sorted({key for row in rows for key in row} - set(MANIFEST_SCHEMA.names))
    if unknown:
        raise ValueError(f"unknown manifest columns {unknown}; known: {MANIFEST_SCHEMA.names}")
    return pa.Table.from_arrays([_column(field, rows) for field in MANIFEST_SCHEMA], schema=MANIFEST_SCHEMA)


def projected_schema(columns: Sequence[str] | None) -> pa.Schema:
    """MANIFEST_SCHEMA restricted to ``columns`` in the order asked; None means every column."""
    if columns is None:
        return MANIFEST_SCHEMA
    unknown = [name for name in columns if name not in MANIFEST_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown manifest columns {unknown}; known: {MANIFEST_SCHEMA.names}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"manifest columns asked for twice: {list(columns)}")
    return pa.schema([MANIFEST_SCHEMA.field(name) for name in columns])


def check_known_columns(names: Iterable[str], uri: str) -> None:
    """Refuse files with columns this version does not know, rather than silently dropping them."""
    unknown = sorted(set(names) - set(MANIFEST_SCHEMA.names))
    if unknown:
        raise ValueError(f"{uri}: unknown manifest columns {unknown}; written by a newer version?")


def conform(table: pa.Table, uri: str, schema: pa.Schema = MANIFEST_SCHEMA) -> pa.Table:
    """Cast a file's table to ``schema``; columns missing from older parts become null."""
    if table.schema.equals(schema):
        return table
    columns = []
    for field in schema:
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
    return pa.Table.from_arrays(columns, schema=schema)

"""Writing manifest parts: each worker batch adds one immutable file, so nothing is ever appended to."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow.parquet as pq

from connectors.manifest.layout import MANIFEST_DIR, PART_PREFIX
from connectors.manifest.rows import ManifestRow
from connectors.manifest.schema import table_from_rows
from connectors.storage import S3Options, safe_output_uri, write_bytes_atomic

logger = logging.getLogger(__name__)


def write_manifest_part(
    output_root: str, rows: Sequence[ManifestRow | Mapping[str, Any]], s3: S3Options | None = None
) -> str:
    """Write ``rows`` as a new manifest part under ``output_root`` and return its URI.

    Rows are ``ManifestRow``s (what the job writes) or dicts keyed by column name (readers'
    tests, migrations); missing keys become null, unknown keys or values of the wrong type raise
    ValueError naming the column. All rows must share one ``run_id``,
    which goes into the file name. The part appears atomically (zstd-compressed Parquet), so a
    reader never sees half a part. No rows, no file: returns "".
    """
    if not rows:
        return ""
    table = table_from_rows([r.as_dict() if isinstance(r, ManifestRow) else r for r in rows])
    run_ids = table.column("run_id").unique().to_pylist()
    if len(run_ids) != 1:
        raise ValueError(f"manifest rows mix run ids {sorted(run_ids)}; write one part per run")
    run_id = run_ids[0]
    if not run_id or "/" in run_id or "\\" in run_id:
        raise ValueError(f"run_id {run_id!r} cannot be part of a file name")

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    uri = safe_output_uri(output_root, f"{MANIFEST_DIR}/{PART_PREFIX}{run_id}-{uuid.uuid4().hex}.parquet")
    write_bytes_atomic(uri, buffer.getvalue(), s3=s3)
    logger.info("wrote %d manifest rows to %s", table.num_rows, uri)
    return uri

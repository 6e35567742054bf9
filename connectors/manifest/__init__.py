"""The Parquet quality manifest: one row per input per run, written as immutable parts.

Every worker batch writes its own part file (``<output>/manifest/part-<run_id>-<uuid>.parquet``),
so there is no shared file to append to and a retried task only adds a part. Readers
concatenate the compacted generation and the parts; an incremental re-run adds newer rows for
the same ids, and ``latest_rows`` picks the newest per id. Rows are built with ``ManifestRow``,
the one place that says what a row holds. Error rows (unreadable inputs) live in
the same table with ``status="error"`` so a run's failures are queryable next to its quality
metrics. ``compact_manifest`` folds the parts into one generation so start-up stays flat, and
``DoneIndex`` is the compact form of "already done" that tasks receive.
"""

from connectors.manifest.compaction import CompactionResult, compact_manifest
from connectors.manifest.done import DONE_COLUMNS, DoneIndex, completed_inputs, hash_versions, id_to_uint64
from connectors.manifest.layout import MANIFEST_DIR
from connectors.manifest.parts import write_manifest_part
from connectors.manifest.reading import latest_rows, read_manifest
from connectors.manifest.rows import InputRef, ManifestRow, RunRef
from connectors.manifest.schema import MANIFEST_COLUMNS_DOC, MANIFEST_SCHEMA

__all__ = [
    "DONE_COLUMNS",
    "MANIFEST_COLUMNS_DOC",
    "MANIFEST_DIR",
    "MANIFEST_SCHEMA",
    "CompactionResult",
    "DoneIndex",
    "InputRef",
    "ManifestRow",
    "RunRef",
    "compact_manifest",
    "completed_inputs",
    "hash_versions",
    "id_to_uint64",
    "latest_rows",
    "read_manifest",
    "write_manifest_part",
]

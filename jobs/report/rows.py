"""The rows a report is about (the newest manifest row per input) and the filters shared over them."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from connectors.manifest import latest_rows, read_manifest
from connectors.storage import S3Options, join_uri

#: A row filter: one boolean per row of the table it is given.
RowFilter = Callable[[pa.Table], pa.ChunkedArray]


def load_rows(run_root: str, s3: S3Options | None = None, run_id: str | None = None) -> pa.Table:
    """Newest manifest row per input, of one run (``run_id``) or of all runs.

    Raises FileNotFoundError for a folder without a manifest and ValueError for an unknown run id.
    """
    table = read_manifest(run_root, s3)
    if table.num_rows == 0:
        raise FileNotFoundError(f"no manifest rows under {join_uri(run_root, 'manifest')}")
    if run_id is not None:
        known = sorted(set(table["run_id"].to_pylist()))
        if run_id not in known:
            listed = ", ".join(known[-20:])
            raise ValueError(
                f"run id {run_id!r} is not in the manifest of {run_root}; known run ids: {listed}"
            )
        table = table.filter(pc.equal(table["run_id"], run_id))
    return latest_rows(table)


def is_ok(table: pa.Table) -> pa.ChunkedArray:
    """Rows that produced a mask."""
    return pc.equal(table["status"], "ok")


def ok_with(column: str) -> RowFilter:
    """Ok rows that recorded ``column``."""
    return lambda table: pc.and_(is_ok(table), pc.is_valid(table[column]))


def ok_flag(column: str) -> RowFilter:
    """Ok rows whose boolean ``column`` is set."""
    return lambda table: pc.and_(is_ok(table), pc.fill_null(table[column], False))


def count(mask: pa.ChunkedArray | pa.Array) -> int:
    """How many entries of a boolean column are true (nulls count as false)."""
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)

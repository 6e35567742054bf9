"""Manifests written before ``weights`` became ``weights_sha256``: readers, the done index and
compaction all see the current name, and compaction rewrites old parts under it."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.manifest import (
    MANIFEST_SCHEMA,
    DoneIndex,
    compact_manifest,
    completed_inputs,
    read_manifest,
    write_manifest_part,
)
from connectors.manifest.migration import file_columns
from connectors.manifest.schema import table_from_rows
from connectors.storage import read_bytes, write_bytes_atomic
from tests.support.manifest_rows import T0, ok_row

# Input ids as the job writes them (16 hex digits), which the done index needs.
A, B, C = "000000000000000a", "000000000000000b", "000000000000000c"


@pytest.fixture(params=["local", "memory"])
def output_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"memory://migration-test-{uuid.uuid4().hex}/out"


def _write_old_part(output_root: str, rows: list[dict]) -> None:
    """A part as versions before the rename wrote it: the weights hash in a column named ``weights``."""
    table = table_from_rows(rows)
    old = table.rename_columns(["weights" if n == "weights_sha256" else n for n in table.column_names])
    buffer = io.BytesIO()
    pq.write_table(old, buffer, compression="zstd")
    write_bytes_atomic(f"{output_root}/manifest/part-run-old-{uuid.uuid4().hex}.parquet", buffer.getvalue())


@pytest.fixture
def mixed(output_root: str) -> str:
    """An old part (A, B) and a new one (B again, newer, and C) side by side."""
    _write_old_part(
        output_root,
        [ok_row(A, "run-old", weights_sha256="old-sha"), ok_row(B, "run-old", weights_sha256="old-sha")],
    )
    later = T0 + timedelta(hours=1)
    write_manifest_part(
        output_root,
        [
            ok_row(B, "run-new", later, weights_sha256="new-sha", source_version="etag-2"),
            ok_row(C, "run-new", later, weights_sha256="new-sha"),
        ],
    )
    return output_root


def test_old_parts_read_with_the_column_renamed(mixed: str) -> None:
    table = read_manifest(mixed)

    assert table.schema.equals(MANIFEST_SCHEMA)
    by_run = sorted(zip(table["id"].to_pylist(), table["weights_sha256"].to_pylist(), strict=True))
    assert by_run == [(A, "old-sha"), (B, "new-sha"), (B, "old-sha"), (C, "new-sha")]
    projected = read_manifest(mixed, columns=["id", "weights_sha256"])
    assert projected.column_names == ["id", "weights_sha256"]
    assert sorted(projected["weights_sha256"].to_pylist()) == ["new-sha", "new-sha", "old-sha", "old-sha"]


def test_the_done_index_reads_old_parts(mixed: str) -> None:
    assert completed_inputs(mixed) == {A: "etag-1", B: "etag-2", C: "etag-1"}
    index = DoneIndex.load(mixed)
    assert index.is_done([A, B, C], ["etag-1", "etag-2", "etag-1"]).tolist() == [True, True, True]


def test_compaction_rewrites_old_parts_under_the_new_name(mixed: str) -> None:
    result = compact_manifest(mixed)

    assert result.parts_merged == 2
    written = pa.concat_tables(pq.read_table(io.BytesIO(read_bytes(uri))) for uri in result.files)
    assert "weights" not in written.column_names
    assert dict(zip(written["id"].to_pylist(), written["weights_sha256"].to_pylist(), strict=True)) == {
        A: "old-sha",
        B: "new-sha",
        C: "new-sha",
    }
    assert read_manifest(mixed).sort_by("id").equals(written.sort_by("id"))


def test_a_part_with_both_names_keeps_the_current_column() -> None:
    assert file_columns(["id", "weights", "weights_sha256"]) == {
        "id": "id",
        "weights_sha256": "weights_sha256",
    }
    assert file_columns(["id", "weights"]) == {"id": "id", "weights_sha256": "weights"}

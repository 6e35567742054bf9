"""Manifest parts: schema, atomic writes, reading back and picking the newest row per id."""

from __future__ import annotations

import io
import os
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors import storage
from connectors.manifest import (
    MANIFEST_COLUMNS_DOC,
    MANIFEST_SCHEMA,
    latest_rows,
    read_manifest,
    write_manifest_part,
)
from connectors.storage import S3Options, list_files, read_bytes, write_bytes_atomic
from tests.support.manifest_rows import T0, error_row, ok_row

EXPECTED_COLUMNS = [
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


@pytest.fixture(params=["local", "memory"])
def output_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"memory://manifest-test-{uuid.uuid4().hex}/out"


def test_schema_columns_order_and_nullability() -> None:
    assert [(f.name, f.type) for f in MANIFEST_SCHEMA] == EXPECTED_COLUMNS
    required = {f.name for f in MANIFEST_SCHEMA if not f.nullable}
    assert required == {"id", "source_uri", "status", "run_id"}


def test_every_column_is_documented_in_order() -> None:
    assert list(MANIFEST_COLUMNS_DOC) == MANIFEST_SCHEMA.names
    for name, doc in MANIFEST_COLUMNS_DOC.items():
        assert doc.strip(), name
        assert "\n" not in doc, name


def test_write_and_read_round_trip(output_root: str) -> None:
    first = write_manifest_part(output_root, [ok_row("a"), error_row("b")])
    second = write_manifest_part(output_root, [ok_row("c", run_id="run-2", seam_disagreement=0.5)])

    for uri in (first, second):
        assert uri.startswith(f"{output_root}/manifest/part-")
        assert uri.endswith(".parquet")
        assert pq.read_table(io.BytesIO(read_bytes(uri))).schema.equals(MANIFEST_SCHEMA)
    assert re.fullmatch(r"part-run-1-[0-9a-f]{32}\.parquet", first.rsplit("/", 1)[1])
    assert first != write_manifest_part(output_root, [ok_row("a")])

    table = read_manifest(output_root)

    assert table.schema.equals(MANIFEST_SCHEMA)
    rows = {row["id"]: row for row in table.to_pylist()}
    assert sorted(table.column("id").to_pylist()) == ["a", "a", "b", "c"]
    assert rows["a"]["width"] == 640
    assert rows["a"]["mean_confidence"] == pytest.approx(0.875)
    assert rows["a"]["processed_at"] == T0
    assert rows["a"]["error"] is None
    assert rows["a"]["cutout_uri"] is None
    assert rows["b"]["status"] == "error"
    assert rows["b"]["width"] is None
    assert rows["b"]["error"] == "s3://bucket/in/b.jpg: not found"
    assert rows["c"]["seam_disagreement"] == pytest.approx(0.5)
    assert rows["c"]["run_id"] == "run-2"


def test_parts_are_zstd_compressed(tmp_path: Path) -> None:
    uri = write_manifest_part(str(tmp_path), [ok_row("a")])
    metadata = pq.ParquetFile(uri).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_round_trip_on_s3(s3_server, s3_bucket: str) -> None:
    options = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret=s3_server.secret)
    root = f"s3://{s3_bucket}/out"
    uri = write_manifest_part(root, [ok_row("a"), error_row("b")], s3=options)

    assert s3_server.filesystem().exists(uri.removeprefix("s3://"))
    assert sorted(read_manifest(root, s3=options).column("id").to_pylist()) == ["a", "b"]


def test_empty_rows_write_nothing_and_no_manifest_reads_empty(output_root: str) -> None:
    assert write_manifest_part(output_root, []) == ""
    table = read_manifest(output_root)
    assert table.num_rows == 0
    assert table.schema.equals(MANIFEST_SCHEMA)
    with pytest.raises(FileNotFoundError):
        list_files(output_root)


def test_unknown_keys_are_rejected_by_name(output_root: str) -> None:
    with pytest.raises(ValueError, match=r"unknown manifest columns \['confidence', 'widht'\]"):
        write_manifest_part(output_root, [ok_row("a"), ok_row("b", widht=3, confidence=0.5)])
    assert read_manifest(output_root).num_rows == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param(ok_row("a", width="wide"), "'width'", id="wrong-type"),
        pytest.param({**ok_row("a"), "status": None}, "'status' is required", id="missing-required"),
        pytest.param({k: v for k, v in ok_row("a").items() if k != "run_id"}, "'run_id'", id="no-run-id"),
        pytest.param(ok_row("a", run_id="a/b"), "cannot be part of a file name", id="slash-in-run-id"),
    ],
)
def test_invalid_rows_raise_value_error(output_root: str, row: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_manifest_part(output_root, [row])


def test_one_part_per_run(output_root: str) -> None:
    with pytest.raises(ValueError, match="mix run ids"):
        write_manifest_part(output_root, [ok_row("a", run_id="r1"), ok_row("b", run_id="r2")])


def test_local_write_leaves_only_the_part(tmp_path: Path) -> None:
    uri = write_manifest_part(str(tmp_path), [ok_row("a")])
    assert os.listdir(tmp_path / "manifest") == [uri.rsplit("/", 1)[1]]


def test_failed_write_leaves_no_part_or_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rename(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        write_manifest_part(str(tmp_path), [ok_row("a")])
    assert os.listdir(tmp_path / "manifest") == []


def test_read_ignores_temp_hidden_and_marker_files(output_root: str) -> None:
    uri = write_manifest_part(output_root, [ok_row("a")])
    garbage = b"not parquet at all"
    write_bytes_atomic(f"{output_root}/manifest/.part-x.parquet.0123.tmp", garbage)
    write_bytes_atomic(f"{output_root}/manifest/.hidden.parquet", garbage)
    write_bytes_atomic(f"{output_root}/manifest/_SUCCESS", b"")
    write_bytes_atomic(f"{output_root}/manifest/notes.txt", garbage)

    table = read_manifest(output_root)

    assert table.column("id").to_pylist() == ["a"]
    assert read_bytes(uri)  # the real part is still there


def test_read_fills_columns_missing_from_older_parts(tmp_path: Path) -> None:
    older = pa.table({"id": ["a"], "source_uri": ["/in/a.jpg"], "status": ["ok"], "run_id": ["r0"]})
    buffer = io.BytesIO()
    pq.write_table(older, buffer)
    write_bytes_atomic(str(tmp_path / "manifest" / "part-r0-old.parquet"), buffer.getvalue())

    table = read_manifest(str(tmp_path))

    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table.to_pylist()[0]["width"] is None


def test_read_rejects_parts_with_unknown_columns(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ["a"], "surprise": [1]}), buffer)
    write_bytes_atomic(str(tmp_path / "manifest" / "part-x.parquet"), buffer.getvalue())
    with pytest.raises(ValueError, match="surprise"):
        read_manifest(str(tmp_path))


def test_latest_rows_keeps_the_newest_row_per_id(output_root: str) -> None:
    later = T0 + timedelta(hours=1)
    # Newer parts are not necessarily read last: run ids and uuids decide the part order.
    write_manifest_part(output_root, [error_row("a", "z-old", T0), ok_row("b", "z-old", later)])
    write_manifest_part(output_root, [ok_row("a", "a-new", later), error_row("b", "a-new", T0)])
    write_manifest_part(output_root, [ok_row("c", "m", None)])
    write_manifest_part(output_root, [error_row("c", "m2", T0)])
    write_manifest_part(output_root, [ok_row("d", "solo", T0)])

    latest = latest_rows(read_manifest(output_root))

    assert latest.schema.equals(MANIFEST_SCHEMA)
    assert [(r["id"], r["status"], r["run_id"]) for r in latest.to_pylist()] == [
        ("a", "ok", "a-new"),
        ("b", "ok", "z-old"),
        ("c", "error", "m2"),
        ("d", "ok", "solo"),
    ]


def test_latest_rows_ties_go_to_the_later_row() -> None:
    table = pa.Table.from_pylist(
        [ok_row("a", "first"), ok_row("b", "only"), ok_row("a", "second")], schema=MANIFEST_SCHEMA
    )
    assert latest_rows(table).column("run_id").to_pylist() == ["second", "only"]
    empty = MANIFEST_SCHEMA.empty_table()
    assert latest_rows(empty).num_rows == 0


def test_read_projects_the_asked_columns_in_order(output_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest_part(output_root, [ok_row("a"), error_row("b")])
    write_manifest_part(output_root, [ok_row("c", run_id="run-2")])
    decoded: list[list[str]] = []
    real_read = pq.ParquetFile.read

    def spying_read(self: pq.ParquetFile, columns: list[str] | None = None, **kwargs: object) -> pa.Table:
        decoded.append(list(columns) if columns is not None else list(self.schema_arrow.names))
        return real_read(self, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", spying_read)
    table = read_manifest(output_root, columns=["status", "id"])

    assert table.schema.equals(pa.schema([MANIFEST_SCHEMA.field("status"), MANIFEST_SCHEMA.field("id")]))
    assert sorted(zip(table.column("id").to_pylist(), table.column("status").to_pylist(), strict=True)) == [
        ("a", "ok"),
        ("b", "error"),
        ("c", "ok"),
    ]
    assert decoded == [["status", "id"], ["status", "id"]]


def test_projection_skips_broken_columns_it_was_not_asked_for(tmp_path: Path) -> None:
    odd = pa.table(
        {"id": ["a"], "source_uri": ["/in/a.jpg"], "status": ["ok"], "run_id": ["r0"], "width": ["wide"]}
    )
    buffer = io.BytesIO()
    pq.write_table(odd, buffer)
    write_bytes_atomic(str(tmp_path / "manifest" / "part-r0-odd.parquet"), buffer.getvalue())

    assert read_manifest(str(tmp_path), columns=["id", "status"]).to_pylist() == [{"id": "a", "status": "ok"}]
    assert read_manifest(str(tmp_path), columns=["id", "height"]).to_pylist() == [{"id": "a", "height": None}]
    with pytest.raises(ValueError, match="'width'"):
        read_manifest(str(tmp_path))


def test_projection_of_an_empty_manifest_has_the_asked_schema(output_root: str) -> None:
    table = read_manifest(output_root, columns=["id", "processed_at"])
    assert table.num_rows == 0
    assert table.schema.names == ["id", "processed_at"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [(["id", "widht"], r"unknown manifest columns \['widht'\]"), (["id", "id"], "asked for twice")],
)
def test_projection_rejects_bad_column_lists(output_root: str, columns: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_manifest(output_root, columns=columns)


def test_parallel_read_keeps_part_name_order(output_root: str) -> None:
    # Run ids and uuids, not writing order, decide the part order; latest_rows' ties rely on it.
    id_of = {
        write_manifest_part(output_root, [ok_row(f"{n:03d}", run_id=f"r{n % 7}")]): f"{n:03d}"
        for n in range(40)
    }
    by_name = sorted(id_of, key=lambda uri: uri.rsplit("/", 1)[1])

    table = read_manifest(output_root, columns=["id"])

    assert table.column("id").to_pylist() == [id_of[uri] for uri in by_name]


def test_read_ignores_parquet_files_in_subfolders(output_root: str) -> None:
    write_manifest_part(output_root, [ok_row("a")])
    nested = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([ok_row("z")], schema=MANIFEST_SCHEMA), nested)
    write_bytes_atomic(f"{output_root}/manifest/compacted/orphan/part-00000.parquet", nested.getvalue())
    write_bytes_atomic(f"{output_root}/manifest/elsewhere/part-x.parquet", nested.getvalue())

    assert read_manifest(output_root).column("id").to_pylist() == ["a"]

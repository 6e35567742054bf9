"""Manifest compaction: the latest row per id survives, and a crash at any step changes nothing readers see."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.manifest import (
    MANIFEST_SCHEMA,
    compact_manifest,
    compaction,
    latest_rows,
    layout,
    read_manifest,
    reading,
    write_manifest_part,
)
from connectors.storage import S3Options, list_files, read_bytes, write_bytes_atomic
from tests.support.manifest_rows import T0, error_row, ok_row


class Crash(RuntimeError):
    """Stands in for the process dying at a chosen step."""


@pytest.fixture(params=["local", "memory"])
def output_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"memory://compaction-test-{uuid.uuid4().hex}/out"


def _history(output_root: str, first_run: int = 0, runs: int = 4) -> None:
    """Runs over overlapping ids: changed versions, errors that later succeed and successes that later
    fail, and ids written twice in one run with the same time, so ties between parts decide too."""
    for run in range(first_run, first_run + runs):
        when = T0 + timedelta(hours=run)
        for batch in range(3):
            rows = []
            for n in range(batch * 4, batch * 4 + 6):
                item = f"item-{(n + run) % 10:02d}"
                if n % 3 == 0:
                    rows.append(error_row(item, f"run-{run}", when))
                else:
                    rows.append(ok_row(item, f"run-{run}", when, source_version=f"etag-{run}-{n}"))
            write_manifest_part(output_root, rows)


def _latest(output_root: str) -> pa.Table:
    return latest_rows(read_manifest(output_root))


def _files(output_root: str) -> list[str]:
    try:
        return [entry.relative_path for entry in list_files(f"{output_root}/manifest")]
    except FileNotFoundError:
        return []


def _parts(output_root: str) -> list[str]:
    return [name for name in _files(output_root) if name.startswith("part-")]


def _generations(output_root: str) -> set[str]:
    return {name.split("/")[1] for name in _files(output_root) if name.startswith("compacted/")}


def _pointer(output_root: str) -> dict:
    return json.loads(read_bytes(f"{output_root}/manifest/_compacted.json"))


def test_compaction_keeps_only_the_latest_row_per_id(output_root: str) -> None:
    _history(output_root)
    before = _latest(output_root)
    merged = _parts(output_root)

    result = compact_manifest(output_root)

    assert _parts(output_root) == []
    assert read_manifest(output_root).equals(before)  # the generation is exactly the latest rows
    assert result.rows == before.num_rows == 10
    assert result.parts_merged == len(merged) == 12
    assert result.seconds > 0
    assert result.files == (f"{output_root}/manifest/compacted/{result.generation}/part-00000.parquet",)
    assert _pointer(output_root)["generation"] == result.generation
    assert _pointer(output_root)["files"] == [f"compacted/{result.generation}/part-00000.parquet"]
    assert _pointer(output_root)["merged"] == sorted(merged)
    written = pq.read_table(io.BytesIO(read_bytes(result.files[0])))
    assert written.schema.equals(MANIFEST_SCHEMA)
    assert (
        pq.ParquetFile(io.BytesIO(read_bytes(result.files[0]))).metadata.row_group(0).column(0).compression
        == "ZSTD"
    )


def test_generation_files_hold_rows_per_file_rows_sorted_by_id(output_root: str) -> None:
    _history(output_root)

    result = compact_manifest(output_root, rows_per_file=3)

    names = [uri.rsplit("/", 1)[1] for uri in result.files]
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet", "part-00003.parquet"]
    ids = [pq.read_table(io.BytesIO(read_bytes(uri))).column("id").to_pylist() for uri in result.files]
    assert [len(chunk) for chunk in ids] == [3, 3, 3, 1]
    assert [item for chunk in ids for item in chunk] == sorted(f"item-{n:02d}" for n in range(10))


def test_rows_per_file_must_be_positive(output_root: str) -> None:
    with pytest.raises(ValueError, match="rows_per_file"):
        compact_manifest(output_root, rows_per_file=0)


def test_parts_written_after_compaction_are_read_and_win_when_newer(output_root: str) -> None:
    _history(output_root)
    first = compact_manifest(output_root)
    late = T0 + timedelta(days=1)
    write_manifest_part(output_root, [error_row("item-01", "late", late), ok_row("new-item", "late", late)])
    write_manifest_part(output_root, [ok_row("item-02", "stale", T0 - timedelta(days=1))])
    expected = {row["id"]: row for row in _latest(output_root).to_pylist()}

    assert (expected["item-01"]["run_id"], expected["item-01"]["status"]) == ("late", "error")
    assert expected["item-02"]["run_id"] == "run-3"
    assert expected["new-item"]["run_id"] == "late"

    second = compact_manifest(output_root)

    assert {row["id"]: row for row in _latest(output_root).to_pylist()} == expected
    assert second.generation != first.generation
    assert (second.rows, second.parts_merged) == (11, 2)
    assert _generations(output_root) == {second.generation}
    assert _parts(output_root) == []


def test_nothing_to_compact_rewrites_nothing(output_root: str) -> None:
    empty = compact_manifest(output_root)
    assert (empty.generation, empty.rows, empty.files, empty.parts_merged) == ("", 0, (), 0)
    assert _files(output_root) == []

    _history(output_root)
    first = compact_manifest(output_root)
    again = compact_manifest(output_root)

    assert (again.generation, again.rows, again.files, again.parts_merged) == (
        first.generation,
        first.rows,
        first.files,
        0,
    )


def test_crash_before_the_pointer_leaves_the_manifest_unchanged(
    output_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(output_root)
    compact_manifest(output_root)
    _history(output_root, first_run=4, runs=2)
    before, pointer, parts = _latest(output_root), _pointer(output_root), _parts(output_root)
    real_write = layout.write_bytes_atomic

    def crash_on_pointer(uri: str, data: bytes, s3: S3Options | None = None) -> None:
        if uri.endswith("/_compacted.json"):
            raise Crash("died before publishing")
        real_write(uri, data, s3=s3)

    monkeypatch.setattr(layout, "write_bytes_atomic", crash_on_pointer)
    with pytest.raises(Crash):
        compact_manifest(output_root)
    monkeypatch.undo()

    assert _latest(output_root).equals(before)
    assert _pointer(output_root) == pointer
    assert _parts(output_root) == parts
    assert len(_generations(output_root)) == 2  # the published one and the orphan

    result = compact_manifest(output_root)

    assert _latest(output_root).equals(before)
    assert _generations(output_root) == {result.generation}


@pytest.mark.parametrize("step", ["parts", "half-the-parts", "previous-generation"])
def test_crash_after_the_pointer_leaves_the_manifest_unchanged(
    output_root: str, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    _history(output_root)
    previous = compact_manifest(output_root)
    _history(output_root, first_run=4, runs=2)
    before = _latest(output_root)
    real_remove = compaction.remove_files

    def crash_removing_parts(uris: list[str], s3: S3Options | None = None) -> None:
        if step == "half-the-parts":
            real_remove(uris[: len(uris) // 2], s3)
        raise Crash("died while deleting parts")

    def crash_removing_generation(output_root: str, generation: str, s3: S3Options | None = None) -> None:
        raise Crash("died before deleting the previous generation")

    if step == "previous-generation":
        monkeypatch.setattr(compaction, "remove_generation", crash_removing_generation)
    else:
        monkeypatch.setattr(compaction, "remove_files", crash_removing_parts)
    with pytest.raises(Crash):
        compact_manifest(output_root)
    monkeypatch.undo()

    published = _pointer(output_root)["generation"]
    assert published != previous.generation
    assert previous.generation in _generations(output_root)
    assert _latest(output_root).equals(before)
    assert read_manifest(output_root).equals(before)  # leftover parts are skipped, not double-counted

    result = compact_manifest(output_root)

    assert (result.generation, result.parts_merged) == (published, 0)
    assert _latest(output_root).equals(before)
    assert _generations(output_root) == {published}
    assert _parts(output_root) == []


def test_leftovers_of_a_crashed_clean_up_stay_hidden_through_the_next_compaction(
    output_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash_removing_parts(uris: list[str], s3: S3Options | None = None) -> None:
        raise Crash("died while deleting parts")

    _history(output_root)
    monkeypatch.setattr(compaction, "remove_files", crash_removing_parts)
    with pytest.raises(Crash):
        compact_manifest(output_root)
    _history(output_root, first_run=4, runs=1)
    before = _latest(output_root)
    with pytest.raises(Crash):
        compact_manifest(output_root)
    monkeypatch.undo()

    assert len(_parts(output_root)) == 15
    assert read_manifest(output_root).equals(before)

    compact_manifest(output_root)

    assert _parts(output_root) == []
    assert read_manifest(output_root).equals(before)


def test_orphan_generations_are_ignored_and_removed(output_root: str) -> None:
    _history(output_root)
    result = compact_manifest(output_root)
    before = read_manifest(output_root)
    newer = io.BytesIO()
    pq.write_table(
        pa.Table.from_pylist([error_row("item-01", "ghost", T0 + timedelta(days=9))], schema=MANIFEST_SCHEMA),
        newer,
    )
    write_bytes_atomic(
        f"{output_root}/manifest/compacted/00000000T000000Z-orphan/part-00000.parquet", newer.getvalue()
    )

    assert read_manifest(output_root).equals(before)

    again = compact_manifest(output_root)

    assert again.generation == result.generation
    assert _generations(output_root) == {result.generation}


def test_parts_added_during_compaction_are_kept(output_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(output_root)
    late = T0 + timedelta(days=1)
    real_publish = compaction.write_pointer

    def publish_while_a_worker_writes(*args: object, **kwargs: object) -> str:
        write_manifest_part(
            output_root, [error_row("item-03", "concurrent", late), ok_row("fresh", "concurrent", late)]
        )
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(compaction, "write_pointer", publish_while_a_worker_writes)
    result = compact_manifest(output_root)

    assert len(_parts(output_root)) == 1
    assert result.rows == 10
    latest = {row["id"]: row["run_id"] for row in _latest(output_root).to_pylist()}
    assert (latest["item-03"], latest["fresh"]) == ("concurrent", "concurrent")


def test_reader_racing_a_compaction_sees_every_row_once(
    output_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(output_root)
    compact_manifest(output_root)
    _history(output_root, first_run=4, runs=2)
    expected = _latest(output_root)
    real_read_pointer = reading.read_pointer
    raced = []

    def compact_after_the_reader_listed(root: str, s3: S3Options | None = None) -> layout.Pointer | None:
        pointer = real_read_pointer(root, s3)
        if not raced:
            raced.append(True)
            compact_manifest(root, s3)  # deletes the parts listed and the generation just named
        return pointer

    monkeypatch.setattr(reading, "read_pointer", compact_after_the_reader_listed)
    table = read_manifest(output_root)

    assert raced
    assert table.equals(expected)


def test_unreadable_pointer_is_an_error_not_an_empty_manifest(output_root: str) -> None:
    _history(output_root)
    compact_manifest(output_root)
    pointer = _pointer(output_root)
    write_bytes_atomic(
        f"{output_root}/manifest/_compacted.json",
        json.dumps({**pointer, "files": ["../../elsewhere.parquet"]}).encode(),
    )
    with pytest.raises(ValueError, match="outside its generation"):
        read_manifest(output_root)
    write_bytes_atomic(f"{output_root}/manifest/_compacted.json", b"{not json")
    with pytest.raises(ValueError, match="unreadable compacted-manifest pointer"):
        read_manifest(output_root)


def test_compaction_on_s3(s3_server, s3_bucket: str) -> None:
    options = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret=s3_server.secret)
    root = f"s3://{s3_bucket}/out"
    write_manifest_part(root, [ok_row("a"), error_row("b")], s3=options)
    first = compact_manifest(root, s3=options)
    write_manifest_part(root, [ok_row("b", "run-2", T0 + timedelta(hours=1))], s3=options)
    write_bytes_atomic(
        f"{root}/manifest/compacted/orphan/part-00000.parquet", b"not even parquet", s3=options
    )
    before = latest_rows(read_manifest(root, s3=options))

    result = compact_manifest(root, s3=options)

    assert result.generation != first.generation
    assert sorted(s3_server.filesystem().find(f"{s3_bucket}/out/manifest")) == [
        f"{s3_bucket}/out/manifest/_compacted.json",
        f"{s3_bucket}/out/manifest/compacted/{result.generation}/part-00000.parquet",
    ]
    assert read_manifest(root, s3=options).equals(before)

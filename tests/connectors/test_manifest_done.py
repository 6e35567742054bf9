"""The done-index: the same answers as ``completed_inputs``, in two small arrays."""

from __future__ import annotations

import hashlib
import pickle
import random
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.manifest import (
    DONE_COLUMNS,
    DoneIndex,
    compact_manifest,
    completed_inputs,
    hash_versions,
    id_to_uint64,
    write_manifest_part,
)
from tests.support.manifest_rows import T0, error_row, ok_row


def item_id(uri: str) -> str:
    """The job's input id: the first 16 hex digits of the SHA-1 of the URI."""
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


@pytest.fixture(params=["local", "memory"])
def output_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"memory://done-test-{uuid.uuid4().hex}/out"


def _random_manifest(output_root: str, rows: int = 10_000, inputs: int = 3_000, seed: int = 7) -> list[str]:
    """``rows`` rows over ``inputs`` ids in parts of 100: versions change, some rows fail, some lack a version."""
    rng = random.Random(seed)
    ids = [item_id(f"s3://bucket/in/{n}.jpg") for n in range(inputs)]
    batch: list[dict] = []
    for n in range(rows):
        item = rng.choice(ids)
        when = T0 + timedelta(seconds=rng.randrange(50_000))
        run_id = f"run-{n // 100}"
        if rng.random() < 0.2:
            batch.append(error_row(item, run_id, when))
        else:
            version = None if rng.random() < 0.02 else f"etag-{rng.randrange(3)}"
            batch.append(ok_row(item, run_id, when, source_version=version))
        if len(batch) == 100:
            write_manifest_part(output_root, batch)
            batch = []
    write_manifest_part(output_root, batch)
    return ids


def _listing(ids: list[str], seed: int = 11) -> tuple[list[str], list[str]]:
    """What a nightly listing would find: every known id plus new ones, each at some version."""
    rng = random.Random(seed)
    listed = ids + [item_id(f"s3://bucket/in/new-{n}.jpg") for n in range(500)]
    rng.shuffle(listed)
    return listed, [f"etag-{rng.randrange(3)}" for _ in listed]


def test_ids_become_the_numbers_they_spell() -> None:
    ids = ["0000000000000000", "0000000000000001", "0123456789abcdef", "ffffffffffffffff"]
    expected = np.array([0, 1, 0x0123456789ABCDEF, 2**64 - 1], dtype=np.uint64)
    assert id_to_uint64(ids).dtype == np.uint64
    np.testing.assert_array_equal(id_to_uint64(ids), expected)
    chunked = pa.chunked_array([pa.array(ids[:1]), pa.array(ids[1:])])
    np.testing.assert_array_equal(id_to_uint64(chunked), expected)
    np.testing.assert_array_equal(id_to_uint64(pa.array(ids).slice(2)), expected[2:])
    assert id_to_uint64([]).shape == (0,)
    uris = [f"s3://bucket/in/{n}.jpg" for n in range(1000)]
    assert id_to_uint64([item_id(uri) for uri in uris]).tolist() == [int(item_id(uri), 16) for uri in uris]


@pytest.mark.parametrize(
    "bad", ["abc", "0123456789abcdef0", "0123456789ABCDEF", "0123456789abcdeg", "0123456789abcd\u00e9"]
)
def test_ids_that_are_not_16_lowercase_hex_digits_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match=f"input id '{bad}' is not 16 lowercase hex digits"):
        id_to_uint64(["0123456789abcdef", bad])


def test_null_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="null"):
        id_to_uint64(pa.array(["0123456789abcdef", None]))


def test_version_hash_is_the_first_8_bytes_of_blake2b() -> None:
    versions = ["etag-1", "2024-05-01T12:00:00+00:00", "", '"d41d8cd98f00b204e9800998ecf8427e"']
    expected = [
        int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") for v in versions
    ]
    assert hash_versions(versions).tolist() == expected
    assert hash_versions(pa.array(versions)).tolist() == expected
    assert hash_versions(["etag-1"])[0] != hash_versions(["etag-2"])[0]


def test_is_done_matches_completed_inputs(output_root: str) -> None:
    ids = _random_manifest(output_root)
    listed, versions = _listing(ids)
    completed = completed_inputs(output_root)
    expected = np.array([completed.get(i) == v for i, v in zip(listed, versions, strict=True)])
    assert 0 < expected.sum() < len(expected) / 2  # the case mixes done, changed, failed and new inputs

    index = DoneIndex.load(output_root)

    np.testing.assert_array_equal(index.is_done(listed, versions), expected)
    assert len(index) == sum(version is not None for version in completed.values())

    compact_manifest(output_root)

    np.testing.assert_array_equal(DoneIndex.load(output_root).is_done(listed, versions), expected)
    assert completed_inputs(output_root) == completed


def test_is_done_needs_the_same_version_and_the_latest_row_ok(output_root: str) -> None:
    a, b, c, d = (item_id(f"/in/{name}.jpg") for name in "abcd")
    later = T0 + timedelta(hours=1)
    write_manifest_part(output_root, [ok_row(a), ok_row(b), ok_row(c), ok_row(d, source_version=None)])
    write_manifest_part(
        output_root, [error_row(b, "run-2", later), ok_row(c, "run-2", later, source_version="v2")]
    )
    index = DoneIndex.load(output_root)

    done = index.is_done(
        [a, a, b, c, c, d, item_id("/in/new.jpg")],
        ["etag-1", "etag-2", "etag-1", "etag-1", "v2", "etag-1", "etag-1"],
    )

    assert done.tolist() == [True, False, False, False, True, False, False]
    assert index.is_done(pa.array([a, c]), pa.array([None, "v2"])).tolist() == [False, True]
    assert index.is_done([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 ids but 1 versions"):
        index.is_done([a, c], ["etag-1"])


def test_load_reads_only_the_done_columns(output_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest_part(output_root, [ok_row(item_id("/in/a.jpg")), error_row(item_id("/in/b.jpg"))])
    decoded: list[list[str]] = []
    real_read = pq.ParquetFile.read

    def spying_read(self: pq.ParquetFile, columns: list[str] | None = None, **kwargs: object) -> pa.Table:
        decoded.append(list(columns) if columns is not None else list(self.schema_arrow.names))
        return real_read(self, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", spying_read)

    assert len(DoneIndex.load(output_root)) == 1
    assert decoded == [list(DONE_COLUMNS)]


def test_empty_index_knows_nothing(output_root: str) -> None:
    for index in (DoneIndex.empty(), DoneIndex.load(output_root)):
        assert len(index) == 0
        assert index.is_done(["0123456789abcdef"], ["etag-1"]).tolist() == [False]


def test_index_pickles_as_its_two_arrays() -> None:
    ids = np.arange(0, 20_000, 2, dtype=np.uint64)
    index = DoneIndex(ids, ids * np.uint64(3))

    restored = pickle.loads(pickle.dumps(index))

    assert len(pickle.dumps(index)) < 16 * len(index) + 1_000
    np.testing.assert_array_equal(restored.ids, index.ids)
    np.testing.assert_array_equal(restored.versions, index.versions)
    assert restored.is_done([f"{6:016x}", f"{7:016x}"], ["x", "x"]).tolist() == [False, False]


@pytest.mark.parametrize(
    ("ids", "versions", "message"),
    [
        (np.array([2, 1], dtype=np.uint64), np.zeros(2, dtype=np.uint64), "sorted and unique"),
        (np.array([1, 1], dtype=np.uint64), np.zeros(2, dtype=np.uint64), "sorted and unique"),
        (np.array([1, 2], dtype=np.int64), np.zeros(2, dtype=np.uint64), "uint64"),
        (np.array([1, 2], dtype=np.uint64), np.zeros(3, dtype=np.uint64), "2 ids but 3 versions"),
    ],
)
def test_index_refuses_arrays_it_cannot_search(ids: np.ndarray, versions: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DoneIndex(ids, versions)


def test_ids_that_are_not_input_ids_fail_the_index_but_not_completed_inputs(output_root: str) -> None:
    write_manifest_part(output_root, [ok_row("a")])
    assert completed_inputs(output_root) == {"a": "etag-1"}
    with pytest.raises(ValueError, match="input id 'a'"):
        DoneIndex.load(output_root)

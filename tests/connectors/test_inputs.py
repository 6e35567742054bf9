"""Input listing and reading: folders, S3 prefixes, list files and tar shards, built by the tests."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.inputs import Record, read_source
from connectors.listing import IMAGE_EXTENSIONS, Source, item_id, list_sources
from connectors.storage import S3Options, write_bytes_atomic


def _tar_bytes(members: list[tuple[str, bytes | None]]) -> bytes:
    """A tar holding ``members`` in order; data None makes a directory entry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _file_source(uri: str, size: int, relative_path: str = "x.jpg") -> Source:
    return Source(uri=uri, relative_path=relative_path, size=size, version="v1", kind="file")


def _tar_source(path: Path, relative_path: str = "shards/s0.tar") -> Source:
    return Source(
        uri=str(path), relative_path=relative_path, size=path.stat().st_size, version="v1", kind="tar"
    )


SHARD_MEMBERS: list[tuple[str, bytes | None]] = [
    ("top.jpg", b"top"),
    ("nested/", None),
    ("nested/deeper/Photo.PNG", b"deep png"),
    ("./dot/x.webp", b"dotted"),
    ("labels.json", b"{}"),
    ("../evil.jpg", b"escape attempt"),
    ("/abs/evil.png", b"absolute"),
]


# --- listing ---------------------------------------------------------------------------------


def test_folder_listing_recurses_matches_case_insensitively_and_finds_shards(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _write(root / "a.JPG", b"a")
    _write(root / "b.jpeg", b"bb")
    _write(root / "sub" / "c.Png", b"ccc")
    _write(root / "sub" / "deep" / "d.tiff", b"dddd")
    _write(root / "readme.txt", b"not an image")
    _write(root / "sub" / "e.jpg.bak", b"backup")
    _write(root / "shards" / "s0.tar", _tar_bytes([("x.jpg", b"x")]))

    sources = list_sources(str(root))

    assert [(s.relative_path, s.kind) for s in sources] == [
        ("a.JPG", "file"),
        ("b.jpeg", "file"),
        ("shards/s0.tar", "tar"),
        ("sub/c.Png", "file"),
        ("sub/deep/d.tiff", "file"),
    ]
    assert [s.uri for s in sources] == sorted(s.uri for s in sources)
    assert sources[0] == Source(
        uri=str(root / "a.JPG"),
        relative_path="a.JPG",
        size=1,
        version=sources[0].version,
        kind="file",
        name="a",
    )
    assert all(s.version for s in sources)
    assert [s.relative_path for s in list_sources(str(root), extensions={"PNG"})] == [
        "shards/s0.tar",
        "sub/c.Png",
    ]


def test_image_extensions_are_lower_case_with_dot() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} == IMAGE_EXTENSIONS


def test_folder_without_images_names_the_spec(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "notes.txt", b"x")
    with pytest.raises(ValueError, match=re.escape(f"no images found under {tmp_path / 'in'}")):
        list_sources(str(tmp_path / "in"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_sources(str(tmp_path / "nowhere"))


def test_memory_folder_listing() -> None:
    root = f"memory://inputs-{uuid.uuid4().hex}"
    write_bytes_atomic(f"{root}/k/one.gif", b"gif")
    write_bytes_atomic(f"{root}/k/two.bmp", b"bmp")

    sources = list_sources(root)

    assert [(s.uri, s.relative_path, s.size) for s in sources] == [
        (f"{root}/k/one.gif", "k/one.gif", 3),
        (f"{root}/k/two.bmp", "k/two.bmp", 3),
    ]
    [record] = read_source(sources[1])
    assert record.data == b"bmp"


def test_s3_prefix_listing_and_reading(s3_server, s3_bucket: str) -> None:
    options = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret=s3_server.secret)
    raw = s3_server.filesystem()
    raw.pipe_file(f"{s3_bucket}/in/a.jpg", b"jpeg on s3")
    raw.pipe_file(f"{s3_bucket}/in/sub/b.PNG", b"png on s3")
    raw.pipe_file(f"{s3_bucket}/in/sub/notes.md", b"ignored")
    raw.pipe_file(f"{s3_bucket}/in/shards/s0.tar", _tar_bytes([("m/x.jpg", b"member on s3")]))
    raw.pipe_file(f"{s3_bucket}/input-sibling/c.jpg", b"not under in/")

    sources = list_sources(f"s3://{s3_bucket}/in", s3=options)

    assert [(s.uri, s.relative_path, s.kind) for s in sources] == [
        (f"s3://{s3_bucket}/in/a.jpg", "a.jpg", "file"),
        (f"s3://{s3_bucket}/in/shards/s0.tar", "shards/s0.tar", "tar"),
        (f"s3://{s3_bucket}/in/sub/b.PNG", "sub/b.PNG", "file"),
    ]
    assert sources[0].version == hashlib.md5(b"jpeg on s3").hexdigest()
    assert sources[0].size == len(b"jpeg on s3")

    [record] = read_source(sources[0], s3=options)
    assert record == Record(
        id=item_id(f"s3://{s3_bucket}/in/a.jpg"),
        uri=f"s3://{s3_bucket}/in/a.jpg",
        relative_path="a.jpg",
        version=sources[0].version,
        size=len(b"jpeg on s3"),
        data=b"jpeg on s3",
        error=None,
        name="a",
    )
    [member] = read_source(sources[1], s3=options)
    assert (member.uri, member.relative_path, member.data) == (
        f"s3://{s3_bucket}/in/shards/s0.tar#m/x.jpg",
        "shards/s0/m/x.jpg",
        b"member on s3",
    )


def test_s3_list_file_with_missing_entry(s3_server, s3_bucket: str) -> None:
    options = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret=s3_server.secret)
    raw = s3_server.filesystem()
    raw.pipe_file(f"{s3_bucket}/in/a.jpg", b"a")
    raw.pipe_file(f"{s3_bucket}/in/b.png", b"bb")
    missing = f"s3://{s3_bucket}/in/nope.jpg"
    raw.pipe_file(f"{s3_bucket}/lists/l.txt", f"s3://{s3_bucket}/in/a.jpg\n../in/b.png\n{missing}\n".encode())

    sources = list_sources(f"s3://{s3_bucket}/lists/l.txt", s3=options)

    assert [(s.uri, s.relative_path, s.size) for s in sources] == [
        (f"s3://{s3_bucket}/in/a.jpg", f"{s3_bucket}/in/a.jpg", 1),
        (f"s3://{s3_bucket}/in/b.png", f"{s3_bucket}/in/b.png", 2),
        (missing, f"{s3_bucket}/in/nope.jpg", -1),
    ]
    assert sources[1].version == hashlib.md5(b"bb").hexdigest()
    [error] = read_source(sources[2], s3=options)
    assert (error.data, error.error) == (None, f"{missing}: not found")


def test_txt_list_resolves_entries_and_keeps_missing_ones_as_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data / "x.jpg", b"x")
    _write(data / "sub" / "y.png", b"yy")
    _write(tmp_path / "lists" / "near.jpg", b"near")
    _write(tmp_path / "shards" / "s.tar", _tar_bytes([("m.jpg", b"m")]))
    memory_uri = f"memory://listed-{uuid.uuid4().hex}/z.jpg"
    write_bytes_atomic(memory_uri, b"zzz")
    missing = data / "gone.jpg"
    list_file = _write(
        tmp_path / "lists" / "inputs.txt",
        "\n".join(
            [
                "# inputs for the test",
                f"{data / 'x.jpg'}",
                "",
                f"  file://{data / 'sub' / 'y.png'}  ",
                "near.jpg",
                f"{data / 'x.jpg'}",
                "../shards/s.tar",
                memory_uri,
                str(missing),
            ]
        ).encode(),
    )

    sources = list_sources(str(list_file))

    by_uri = {s.uri: s for s in sources}
    assert [s.uri for s in sources] == sorted(by_uri)
    assert set(by_uri) == {
        str(data / "x.jpg"),
        str(data / "sub" / "y.png"),
        str(tmp_path / "lists" / "near.jpg"),
        str(tmp_path / "shards" / "s.tar"),
        memory_uri,
        str(missing),
    }
    assert by_uri[str(data / "x.jpg")].relative_path == str(data / "x.jpg").lstrip("/")
    assert by_uri[memory_uri].relative_path == memory_uri.removeprefix("memory://")
    assert by_uri[str(data / "sub" / "y.png")].size == 2
    assert by_uri[str(tmp_path / "shards" / "s.tar")].kind == "tar"
    assert by_uri[str(missing)] == Source(
        uri=str(missing),
        relative_path=str(missing).lstrip("/"),
        size=-1,
        version="",
        kind="file",
        name=str(missing.with_suffix("")).lstrip("/"),
    )

    [error] = read_source(by_uri[str(missing)])
    assert error.data is None
    assert error.id == item_id(str(missing))
    assert error.error is not None
    assert str(missing) in error.error
    assert "not found" in error.error
    [ok] = read_source(by_uri[memory_uri])
    assert (ok.data, ok.error) == (b"zzz", None)


def test_memory_list_resolves_relative_entries_next_to_it() -> None:
    root = f"memory://lists-{uuid.uuid4().hex}"
    write_bytes_atomic(f"{root}/imgs/a.jpg", b"a")
    write_bytes_atomic(f"{root}/sets/l.txt", b"../imgs/a.jpg\n")

    [source] = list_sources(f"{root}/sets/l.txt")

    assert source.uri == f"{root}/imgs/a.jpg"
    assert source.relative_path == f"{root.removeprefix('memory://')}/imgs/a.jpg"
    assert source.size == 1


def test_parquet_lists_use_the_uri_column_else_the_first_string_column(tmp_path: Path) -> None:
    _write(tmp_path / "a.jpg", b"a")
    _write(tmp_path / "b.png", b"b")
    with_uri = tmp_path / "with_uri.parquet"
    pq.write_table(
        pa.table({"label": ["cat", "dog"], "uri": [str(tmp_path / "b.png"), str(tmp_path / "a.jpg")]}),
        with_uri,
    )
    first_string = tmp_path / "first_string.parquet"
    pq.write_table(
        pa.table({"n": [1, 2, 3], "path": ["a.jpg", None, "missing.jpg"], "other": ["x", "y", "z"]}),
        first_string,
    )

    assert [s.uri for s in list_sources(str(with_uri))] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    sources = list_sources(str(first_string))
    assert [(s.uri, s.size) for s in sources] == [
        (str(tmp_path / "a.jpg"), 1),
        (str(tmp_path / "missing.jpg"), -1),
    ]
    [error] = read_source(sources[1])
    assert error.data is None
    assert error.error == f"{tmp_path / 'missing.jpg'}: not found"

    no_strings = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"n": [1]}), no_strings)
    with pytest.raises(ValueError, match="no 'uri' or other string column"):
        list_sources(str(no_strings))


def test_list_problems_name_the_list_file(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.txt", b"# nothing yet\n\n")
    with pytest.raises(ValueError, match=re.escape(f"no inputs listed in {empty}")):
        list_sources(str(empty))
    bad_scheme = _write(tmp_path / "bad.txt", b"http://example.com/x.jpg\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad_scheme} line 1") + ".*'http'"):
        list_sources(str(bad_scheme))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.txt"))):
        list_sources(str(tmp_path / "absent.txt"))


# --- reading ---------------------------------------------------------------------------------


def test_read_file_source(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.jpg", b"image bytes")
    [record] = read_source(_file_source(str(path), 11, "x.jpg"))
    assert record == Record(
        id=item_id(str(path)),
        uri=str(path),
        relative_path="x.jpg",
        version="v1",
        size=11,
        data=b"image bytes",
        error=None,
        name="x",
    )


def test_oversize_files_become_error_records(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.png", b"0123456789")

    # Listed as too big: refused without reading (the object need not even exist any more).
    [listed_big] = read_source(_file_source(str(tmp_path / "absent.png"), 10), max_bytes=4)
    [grew] = read_source(_file_source(str(path), 3), max_bytes=4)
    [unknown] = read_source(_file_source(str(path), -1), max_bytes=4)
    [fits] = read_source(_file_source(str(path), -1), max_bytes=10)

    assert listed_big.data is None
    assert listed_big.error == f"{tmp_path / 'absent.png'}: 10 bytes exceeds the 4 bytes input size limit"
    for record in (grew, unknown):
        assert record.data is None
        assert record.error is not None
        assert record.error.startswith(f"{path}: ")
        assert "size limit" in record.error
    assert fits.data == b"0123456789"


def test_directory_listed_as_file_becomes_error_record(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    [record] = read_source(_file_source(str(tmp_path / "folder.jpg"), 0))
    assert record.data is None
    assert record.error is not None
    assert str(tmp_path / "folder.jpg") in record.error


def test_tar_shard_yields_image_members_and_rejects_escaping_names(tmp_path: Path) -> None:
    shard = _write(tmp_path / "shards" / "s0.tar", _tar_bytes(SHARD_MEMBERS))

    records = read_source(_tar_source(shard))

    by_uri = {r.uri: r for r in records}
    ok = {r.relative_path: r.data for r in records if r.error is None}
    assert ok == {
        "shards/s0/top.jpg": b"top",
        "shards/s0/nested/deeper/Photo.PNG": b"deep png",
        "shards/s0/dot/x.webp": b"dotted",
    }
    assert f"{shard}#nested/deeper/Photo.PNG" in by_uri
    assert f"{shard}#dot/x.webp" in by_uri
    assert not any("labels.json" in uri for uri in by_uri)
    evil = by_uri[f"{shard}#../evil.jpg"]
    absolute = by_uri[f"{shard}#/abs/evil.png"]
    for record in (evil, absolute):
        assert record.data is None
        assert record.error is not None
        assert record.error.startswith(f"{shard}#")
        assert "unsafe member name" in record.error
        assert not record.relative_path.startswith(("/", ".."))
        assert record.relative_path.startswith("shards/s0")
    assert len(records) == 5
    for record in records:
        assert record.id == item_id(record.uri)
        assert record.version == "v1"
    assert not (tmp_path / "evil.jpg").exists()


def test_duplicate_member_names_keep_the_last(tmp_path: Path) -> None:
    shard = _write(tmp_path / "s.tar", _tar_bytes([("a.jpg", b"old"), ("a.jpg", b"new")]))
    [record] = read_source(_tar_source(shard, "s.tar"))
    assert (record.relative_path, record.data) == ("s/a.jpg", b"new")


def test_oversize_tar_member_is_an_error_and_the_rest_is_read(tmp_path: Path) -> None:
    shard = _write(tmp_path / "s.tar", _tar_bytes([("big.jpg", b"x" * 100), ("small.jpg", b"ok")]))
    big, small = read_source(_tar_source(shard, "s.tar"), max_bytes=10)
    assert big.data is None
    assert big.error is not None
    assert big.error.startswith(f"{shard}#big.jpg: ")
    assert "size limit" in big.error
    assert small.data == b"ok"


def test_truncated_tar_keeps_complete_members_and_reports_the_shard(tmp_path: Path) -> None:
    whole = _tar_bytes([("a.jpg", b"a" * 600), ("b.jpg", b"b" * 3000), ("c.jpg", b"c")])
    # Cut inside b.jpg's data: a.jpg is complete (512 header + 1024 data), b.jpg is not.
    shard = _write(tmp_path / "cut.tar", whole[: 512 + 1024 + 512 + 1000])

    records = read_source(_tar_source(shard, "cut.tar"))

    assert [(r.uri, r.data is None) for r in records] == [(f"{shard}#a.jpg", False), (str(shard), True)]
    error = records[1]
    assert (error.id, error.relative_path) == (item_id(str(shard)), "cut.tar")
    assert error.error is not None
    assert error.error.startswith(f"{shard}: corrupt or truncated tar after 1 members")
    assert "b.jpg" in error.error


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a tar " * 100, id="garbage"),
        pytest.param(b"x" * 100, id="short"),
    ],
)
def test_unreadable_tar_is_a_single_shard_error(tmp_path: Path, content: bytes) -> None:
    shard = _write(tmp_path / "bad.tar", content)
    [record] = read_source(_tar_source(shard, "bad.tar"))
    assert (record.uri, record.data) == (str(shard), None)
    assert record.error is not None
    assert record.error.startswith(f"{shard}: corrupt or truncated tar after 0 members")


def test_missing_tar_is_a_single_shard_error(tmp_path: Path) -> None:
    missing = tmp_path / "gone.tar"
    [record] = read_source(
        Source(uri=str(missing), relative_path="gone.tar", size=-1, version="", kind="tar")
    )
    assert record.error == f"{missing}: not found"
    assert record.data is None


def test_item_ids_are_stable_and_distinct() -> None:
    assert item_id("s3://bucket/a.jpg") == hashlib.sha1(b"s3://bucket/a.jpg").hexdigest()[:16]
    # Pinned: changing the id scheme would orphan every existing manifest row and output.
    assert item_id("s3://bucket/a.jpg") == "c17f3f669d533670"
    assert re.fullmatch(r"[0-9a-f]{16}", item_id("/data/x.jpg"))
    ids = {item_id(u) for u in ["s3://b/s.tar", "s3://b/s.tar#a.jpg", "s3://b/s.tar#b.jpg", "/b/s.tar"]}
    assert len(ids) == 4

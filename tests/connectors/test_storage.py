"""Storage layer against a local folder, fsspec's memory filesystem and a real SeaweedFS S3."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors import storage
from connectors.storage import (
    FileEntry,
    S3Options,
    StorageAuthError,
    join_uri,
    list_files,
    open_input,
    read_bytes,
    safe_output_uri,
    write_bytes_atomic,
)

TREE = {
    "a.jpg": b"jpeg-bytes",
    "B.PNG": b"png-bytes!",
    "notes.txt": b"not an image",
    "sub/c.png": b"nested png",
    "sub/deeper/d.JPG": b"deep jpeg",
}


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, S3Options | None]:
    """(empty root URI, options) for each backend, so every behaviour is checked on all three."""
    if request.param == "local":
        return str(tmp_path / "root"), None
    if request.param == "memory":
        return f"memory://storage-test-{uuid.uuid4().hex}", None
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    options = S3Options(endpoint_url=server.endpoint_url, key=server.key, secret=server.secret)
    return f"s3://{bucket}/inputs", options


def _write_tree(root: str, s3: S3Options | None) -> None:
    for relative, data in TREE.items():
        write_bytes_atomic(join_uri(root, relative), data, s3=s3)


def test_write_then_read_round_trip(backend: tuple[str, S3Options | None]) -> None:
    root, s3 = backend
    uri = join_uri(root, "masks/x/y.png")
    payload = bytes(range(256)) * 64

    write_bytes_atomic(uri, payload, s3=s3)
    assert read_bytes(uri, s3=s3) == payload
    with open_input(uri, s3=s3) as handle:
        assert handle.read(10) == payload[:10]
        assert handle.read() == payload[10:]

    write_bytes_atomic(uri, b"replaced", s3=s3)
    assert read_bytes(uri, s3=s3) == b"replaced"


def test_list_files_recursive_filtered_and_sorted(backend: tuple[str, S3Options | None]) -> None:
    root, s3 = backend
    _write_tree(root, s3)

    entries = list_files(root, {"png", ".jpg"}, s3=s3)

    assert [entry.relative_path for entry in entries] == ["B.PNG", "a.jpg", "sub/c.png", "sub/deeper/d.JPG"]
    for entry in entries:
        assert isinstance(entry, FileEntry)
        assert entry.size == len(TREE[entry.relative_path])
        assert entry.mtime_or_etag
        assert read_bytes(entry.uri, s3=s3) == TREE[entry.relative_path]
    assert [e.relative_path for e in list_files(root, None, s3=s3)] == sorted(TREE)


def test_list_files_sees_writes_after_a_first_listing(backend: tuple[str, S3Options | None]) -> None:
    root, s3 = backend
    _write_tree(root, s3)
    assert len(list_files(root, {"png"}, s3=s3)) == 2

    write_bytes_atomic(join_uri(root, "sub/new.png"), b"late", s3=s3)

    assert "sub/new.png" in {e.relative_path for e in list_files(root, {"png"}, s3=s3)}


def test_list_files_on_missing_root_names_the_uri(backend: tuple[str, S3Options | None]) -> None:
    root, s3 = backend
    missing = join_uri(root, "does-not-exist")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        list_files(missing, None, s3=s3)


def test_missing_file_error_names_the_uri(backend: tuple[str, S3Options | None]) -> None:
    root, s3 = backend
    _write_tree(root, s3)
    missing = join_uri(root, "sub/missing.png")

    with pytest.raises(FileNotFoundError, match=re.escape(missing)) as info:
        read_bytes(missing, s3=s3)
    assert info.value.filename == missing
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        open_input(missing, s3=s3)


def test_s3_listing_reports_etags_and_skips_folder_markers(s3_server, s3_bucket: str) -> None:
    options = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret=s3_server.secret)
    raw = s3_server.filesystem()
    raw.pipe_file(f"{s3_bucket}/in/one.png", b"one")
    raw.pipe_file(f"{s3_bucket}/in/folder/", b"")  # what consoles create for "new folder"
    raw.pipe_file(f"{s3_bucket}/in/folder/two.png", b"two")
    raw.pipe_file(f"{s3_bucket}/input-sibling/three.png", b"not under in/")

    entries = list_files(f"s3://{s3_bucket}/in/", None, s3=options)

    assert entries == [
        FileEntry(
            uri=f"s3://{s3_bucket}/in/folder/two.png",
            relative_path="folder/two.png",
            size=3,
            mtime_or_etag=hashlib.md5(b"two").hexdigest(),
        ),
        FileEntry(
            uri=f"s3://{s3_bucket}/in/one.png",
            relative_path="one.png",
            size=3,
            mtime_or_etag=hashlib.md5(b"one").hexdigest(),
        ),
    ]


def test_s3_reads_see_objects_rewritten_after_listing(s3_server, s3_bucket: str) -> None:
    """Another worker may rewrite an object between listing and reading; no stale size may be used."""
    options = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret=s3_server.secret)
    raw = s3_server.filesystem()
    raw.pipe_file(f"{s3_bucket}/in/x.png", b"old")
    [entry] = list_files(f"s3://{s3_bucket}/in", None, s3=options)

    raw.pipe_file(f"{s3_bucket}/in/x.png", b"rewritten and longer")
    raw.pipe_file(f"{s3_bucket}/in/y.png", b"new")

    with open_input(entry.uri, s3=options) as handle:
        assert handle.read() == b"rewritten and longer"
    assert [e.size for e in list_files(f"s3://{s3_bucket}/in", None, s3=options)] == [20, 3]


def test_local_listing_uses_absolute_uris_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "x.png").write_bytes(b"x")
    os.utime(tmp_path / "in" / "sub" / "x.png", ns=(0, 1_700_000_000_000_000_000))
    monkeypatch.chdir(tmp_path)

    [entry] = list_files("in", {"png"})

    assert entry.uri == str(tmp_path / "in" / "sub" / "x.png")
    assert entry.mtime_or_etag.startswith("2023-11-14T22:13:20")

    [via_file_scheme] = list_files(f"file://{tmp_path}/in", None)
    assert via_file_scheme.uri == f"file://{tmp_path}/in/sub/x.png"
    assert read_bytes(via_file_scheme.uri) == b"x"


def test_local_write_creates_parents_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "mask.png"
    write_bytes_atomic(str(target), b"done")
    assert target.read_bytes() == b"done"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.png"]


def test_only_older_temp_files_of_atomic_writes_are_swept(tmp_path: Path) -> None:
    old = [tmp_path / f".mask.png.{uuid.uuid4().hex}.tmp", tmp_path / "deep" / f".x.tif.{'a' * 32}.tmp"]
    kept = [tmp_path / ".keep", tmp_path / "mask.png.tmp", tmp_path / f".y.png.{'g' * 32}.tmp"]
    for path in [*old, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (1000, 1000))
    young = Path(storage.temp_path_beside(str(tmp_path / "deep" / "z.png")))
    young.write_bytes(b"in progress")
    os.utime(young, (3000, 3000))
    assert storage.remove_interrupted_writes(str(tmp_path), older_than=2000) == 2
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted([*kept, young])
    assert storage.remove_interrupted_writes("memory://nowhere", older_than=2000) == 0


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_failed_local_write_keeps_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "out" / "mask.png"
    write_bytes_atomic(str(target), b"previous complete output")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    if failing == "write":
        real_fdopen: Callable = os.fdopen

        class HalfWriter:
            """Writes half of the payload and then fails, like a full disk."""

            def __init__(self, fd: int, mode: str) -> None:
                self._handle = real_fdopen(fd, mode)

            def __enter__(self) -> HalfWriter:
                return self

            def __exit__(self, *exc: object) -> None:
                self._handle.close()

            def write(self, data: bytes) -> None:
                self._handle.write(data[: len(data) // 2])
                self._handle.flush()
                boom()

        monkeypatch.setattr(storage.os, "fdopen", HalfWriter)
    else:
        monkeypatch.setattr(storage.os, "replace", boom)

    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(str(target), b"new output that never lands", s3=None)

    assert target.read_bytes() == b"previous complete output"
    assert [p.name for p in target.parent.iterdir()] == ["mask.png"]


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("/etc/passwd", "absolute"),
        ("s3://other-bucket/key.png", "absolute"),
        ("../sibling.png", "escapes"),
        ("a/../../sibling.png", "escapes"),
        ("..", "escapes"),
        ("a/..", "root itself"),
        (".", "root itself"),
        ("..\\evil.png", "backslash"),
    ],
)
def test_safe_output_uri_rejects_escapes(relative: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        safe_output_uri("s3://bucket/outputs", relative)


@pytest.mark.parametrize(
    ("root", "relative", "expected"),
    [
        ("s3://bucket/outputs", "a/b.png", "s3://bucket/outputs/a/b.png"),
        ("s3://bucket/outputs/", "./a/./b.png", "s3://bucket/outputs/a/b.png"),
        ("/data/out", "a/../b.png", "/data/out/b.png"),
        ("memory://", "x.png", "memory://x.png"),
    ],
)
def test_safe_output_uri_accepts_paths_inside_the_root(root: str, relative: str, expected: str) -> None:
    assert safe_output_uri(root, relative) == expected


def test_unsupported_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"'gopher'.*s3://"):
        storage.filesystem("gopher://host/file.png")


def test_s3_options_forbid_unknown_fields_and_hide_the_secret() -> None:
    with pytest.raises(ValueError, match="extra"):
        S3Options(endpoint_url="http://x", secret_key="typo")  # type: ignore[call-arg]
    options = S3Options(key="k", secret="hunter2")
    assert "hunter2" not in repr(options)
    assert "hunter2" not in str(options.model_dump())
    assert options.storage_options()["secret"] == "hunter2"
    assert S3Options().storage_options() == {"anon": False}


def test_wrong_secret_raises_storage_auth_error(s3_server, s3_bucket: str) -> None:
    s3_server.filesystem().pipe_file(f"{s3_bucket}/in/x.png", b"x")
    bad = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret="wrong-secret")
    uri = f"s3://{s3_bucket}/in/x.png"

    for attempt in (
        lambda: read_bytes(uri, s3=bad),
        lambda: open_input(uri, s3=bad),
        lambda: list_files(f"s3://{s3_bucket}/in", None, s3=bad),
        lambda: write_bytes_atomic(f"s3://{s3_bucket}/out/y.png", b"y", s3=bad),
    ):
        with pytest.raises(StorageAuthError) as info:
            attempt()
        message = str(info.value)
        assert isinstance(info.value, PermissionError)
        assert s3_server.endpoint_url in message
        assert s3_bucket in message
        assert "credentials were rejected" in message


def test_unknown_access_key_is_reported_as_rejected_credentials(s3_server, s3_bucket: str) -> None:
    bad = S3Options(endpoint_url=s3_server.endpoint_url, key="nobody", secret="nothing")
    with pytest.raises(StorageAuthError, match="InvalidAccessKeyId"):
        write_bytes_atomic(f"s3://{s3_bucket}/y.png", b"y", s3=bad)


def test_s3_credentials_come_from_the_environment_when_unset(
    s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    options = S3Options(endpoint_url=s3_server.endpoint_url)

    write_bytes_atomic(f"s3://{s3_bucket}/env.png", b"from env", s3=options)

    assert s3_server.filesystem().cat_file(f"{s3_bucket}/env.png") == b"from env"


def test_missing_s3_credentials_raise_storage_auth_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Fails before any request is sent, so it needs no server."""
    import s3fs

    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()

    with pytest.raises(StorageAuthError, match="No S3 credentials found for bucket 'somebucket'"):
        read_bytes("s3://somebucket/x.png", s3=S3Options(endpoint_url="http://127.0.0.1:9"))

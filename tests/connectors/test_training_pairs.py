"""DIS5K-style pairing of training images and masks, local and on a real SeaweedFS."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.training_pairs import UnpairedFilesError, list_training_pairs, pairs_table


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_pairs_by_stem_across_formats_folders_and_datasets(tmp_path):
    _touch(
        tmp_path,
        "DIS-TR/im/a.jpg", "DIS-TR/gt/a.png",
        "DIS-TR/im/sub dir/b.webp", "DIS-TR/gt/sub dir/b.bmp",
        "HRSOD/im/a.tiff", "HRSOD/gt/a.png",  # same stem, other dataset: its own pair
        "DIS-TR/notes.txt", "README.md",  # not images under im/ or gt/: ignored
    )  # fmt: skip
    pairs = list_training_pairs(str(tmp_path))
    assert [(p.key, p.dataset) for p in pairs] == [
        ("DIS-TR/a", "DIS-TR"),
        ("DIS-TR/sub dir/b", "DIS-TR"),
        ("HRSOD/a", "HRSOD"),
    ]
    assert pairs[1].image_uri.endswith("DIS-TR/im/sub dir/b.webp") and pairs[1].mask_uri.endswith(
        "gt/sub dir/b.bmp"
    )
    assert pairs_table(pairs).column_names == ["key", "dataset", "image_uri", "mask_uri"]


def test_a_root_that_is_one_dataset_is_named_after_its_folder(tmp_path):
    _touch(tmp_path / "DIS-VD", "im/x.jpg", "gt/x.png")
    [pair] = list_training_pairs(str(tmp_path / "DIS-VD"))
    assert (pair.key, pair.dataset) == ("x", "DIS-VD")


def test_unpaired_and_ambiguous_files_are_one_error_naming_them(tmp_path):
    _touch(
        tmp_path,
        "im/ok.jpg",
        "gt/ok.png",
        "im/lonely.jpg",
        "gt/orphan.png",
        "im/twice.jpg",
        "im/twice.png",
        "gt/twice.png",
    )
    with pytest.raises(UnpairedFilesError) as caught:
        list_training_pairs(str(tmp_path))
    message = str(caught.value)
    assert "1 images without a mask: " in message and "im/lonely.jpg" in message
    assert "1 masks without an image: " in message and "gt/orphan.png" in message
    assert "stems with several files" in message and "im/twice.jpg" in message
    assert "ok" not in message.replace("lonely", "")


def test_long_lists_are_cut_with_a_count(tmp_path):
    _touch(tmp_path, "gt/keep.png", "im/keep.png", *(f"im/{i:03d}.jpg" for i in range(30)))
    with pytest.raises(UnpairedFilesError, match=r"30 images without a mask: .*\(\+10 more\)"):
        list_training_pairs(str(tmp_path))


def test_a_folder_without_the_layout_or_without_a_root_is_refused(tmp_path):
    _touch(tmp_path, "photos/a.jpg")
    with pytest.raises(UnpairedFilesError, match="no images under im/ and masks under gt/"):
        list_training_pairs(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        list_training_pairs(str(tmp_path / "missing"))


def test_pairs_on_s3(s3_server, s3_bucket):
    fs = s3_server.filesystem()
    for name in ("set/im/a.jpg", "set/gt/a.png", "set/im/b.png", "set/gt/b.png"):
        fs.pipe(f"{s3_bucket}/{name}", b"x")
    pairs = list_training_pairs(f"s3://{s3_bucket}/set", s3_server.options())
    assert [p.key for p in pairs] == ["a", "b"]
    assert pairs[0].image_uri == f"s3://{s3_bucket}/set/im/a.jpg"

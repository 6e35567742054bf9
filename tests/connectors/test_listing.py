"""Listing folder by folder, output names under the collision rule, and Parquet lists at scale."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from birefnet_core.box_guidance import Box
from connectors.inputs import read_source
from connectors.listing import (
    ListColumns,
    Source,
    item_id,
    list_directory,
    list_sources,
    parquet_list_columns,
    source_of_row,
    sources_from_parquet_rows,
    sources_table,
)

FILES = ["a.jpg", "a.png", "a.jpg.png", "b.jpg", "sub/c.png", "sub/c.webp", "sub/deep/d.tif", "notes.txt"]


def _tree(root: Path) -> Path:
    for name in FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    return root


def test_rivals_in_a_folder_keep_their_extensions(tmp_path):
    names = {s.relative_path: s.name for s in list_sources(str(_tree(tmp_path)))}
    assert names == {
        "a.jpg": "a.jpg",
        "a.png": "a.png",
        "a.jpg.png": "",  # its plain name "a.jpg" is taken by the rival a.jpg
        "b.jpg": "b",
        "sub/c.png": "sub/c.png",
        "sub/c.webp": "sub/c.webp",
        "sub/deep/d.tif": "sub/deep/d",
    }


def test_a_refused_input_becomes_an_error_record_and_its_rivals_are_read(tmp_path):
    by_path = {s.relative_path: s for s in list_sources(str(_tree(tmp_path)))}
    [refused] = read_source(by_path["a.jpg.png"])
    assert refused.data is None and str(tmp_path / "a.jpg.png") in refused.error
    assert "output name" in refused.error and "rename" in refused.error
    [kept] = read_source(by_path["a.png"])
    assert kept.error is None and kept.name == "a.png"


def test_folder_by_folder_listing_names_like_the_whole_tree(tmp_path):
    root = str(_tree(tmp_path))
    whole = {s.uri: s for s in list_sources(root)}
    pieces, pending = {}, [""]
    while pending:
        sources, subfolders = list_directory(root, pending.pop())
        pieces.update({s.uri: s for s in sources})
        pending.extend(subfolders)
    assert pieces == whole


def test_tar_members_that_collide_keep_their_extensions(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("x.jpg", "x.png", "x.jpg.png", "y.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(name)
            archive.addfile(info, io.BytesIO(name.encode()))
    shard = tmp_path / "s.tar"
    shard.write_bytes(buffer.getvalue())
    [source] = list_sources(str(tmp_path))
    records = {r.relative_path: r for r in read_source(source)}
    assert {k: r.name for k, r in records.items()} == {
        "s/x.jpg": "s/x.jpg",
        "s/x.png": "s/x.png",
        "s/x.jpg.png": "",
        "s/y.jpg": "s/y",
    }
    assert records["s/x.jpg.png"].data is None and "output name" in records["s/x.jpg.png"].error


def test_sources_survive_a_table_round_trip(tmp_path):
    sources = list_sources(str(_tree(tmp_path)))
    table = sources_table(sources)
    assert [source_of_row(row) for row in table.to_pylist()] == sources
    by_hand = Source(uri="/x/a.jpg", relative_path="a.jpg", size=1, version="v", kind="file")
    assert sources_table([by_hand]).column("name").to_pylist() == ["a"]


def test_an_inventory_style_parquet_list_needs_no_lookups(tmp_path):
    inventory = pa.table(
        {
            "bucket": ["photos", "photos", "photos"],
            "key": ["2026/a.jpg", "2026/a.png", "2026/b.jpg"],
            "size": [10, 20, 30],
            "e_tag": ['"e1"', '"e2"', '"e3"'],
        }
    )
    path = tmp_path / "inventory.parquet"
    pq.write_table(inventory, path)
    columns = parquet_list_columns(str(path))
    assert columns == ListColumns(bucket="bucket", key="key", size="size", version="e_tag")
    # No store is reachable for s3://photos here: only given sizes and versions can work.
    table, skipped = sources_from_parquet_rows(pq.read_table(path), str(path), columns)
    rows = {r["uri"]: r for r in table.to_pylist()}
    assert skipped == 0
    assert rows["s3://photos/2026/b.jpg"] == {
        "uri": "s3://photos/2026/b.jpg",
        "relative_path": "photos/2026/b.jpg",
        "size": 30,
        "version": "e3",
        "kind": "file",
        "name": "photos/2026/b",
        "box": "",
    }
    assert rows["s3://photos/2026/a.png"]["name"] == "photos/2026/a.png"


@pytest.mark.parametrize(
    ("boxes", "kind"),
    [
        (["1,2,30,40", None, " 0, 0, 5, 5 "], pa.string()),
        ([[1, 2, 30, 40], None, [0, 0, 5, 5]], pa.list_(pa.int32())),
        ([[1.0, 2.0, 30.0, 40.0], None, [0.0, 0.0, 5.0, 5.0]], pa.list_(pa.float64(), 4)),
    ],
)
def test_a_parquet_lists_box_column_travels_with_each_source(tmp_path, boxes, kind):
    table = pa.table(
        {"uri": ["s3://p/a.jpg", "s3://p/b.jpg", "s3://p/c.jpg"], "size": [1, 2, 3], "etag": ["x", "y", "z"],
         "box": pa.array(boxes, kind)}
    )  # fmt: skip
    path = tmp_path / "boxes.parquet"
    pq.write_table(table, path)
    columns = parquet_list_columns(str(path))
    assert columns.box == "box"
    sources, _ = sources_from_parquet_rows(pq.read_table(path), str(path), columns)
    listed = {row["uri"]: source_of_row(row).box for row in sources.to_pylist()}
    numbers = [str(Box.parse(b)) if b else "" for b in listed.values()]
    assert numbers == ["1,2,30,40", "", "0,0,5,5"]


def test_a_box_column_of_another_type_is_refused_naming_the_list(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"uri": ["a.jpg"], "box": [3]}), path)
    with pytest.raises(ValueError, match=r"bad.parquet: column 'box' has type int64"):
        parquet_list_columns(str(path))


def test_a_uri_parquet_list_without_stats_looks_inputs_up(tmp_path):
    _tree(tmp_path / "data")
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"uri": ["data/b.jpg", "data/gone.jpg"]}), path)
    columns = parquet_list_columns(str(path))
    assert columns == ListColumns(uri="uri")
    rows = {
        r["relative_path"].rsplit("/", 1)[-1]: r
        for r in sources_from_parquet_rows(pq.read_table(path), str(path), columns)[0].to_pylist()
    }
    assert rows["b.jpg"]["size"] == len(b"b.jpg") and rows["b.jpg"]["version"]
    assert rows["gone.jpg"]["size"] == -1


def test_done_inputs_of_a_parquet_list_are_dropped_before_any_lookup(tmp_path):
    import numpy as np

    from connectors.manifest import DoneIndex, hash_versions, id_to_uint64

    uris = [f"s3://photos/{i}.jpg" for i in range(6)]
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"uri": uris, "size": [1] * 6, "version": ["v"] * 5 + ["changed"]}), path)
    ids = id_to_uint64([item_id(u) for u in uris])
    order = np.argsort(ids)
    done = DoneIndex(ids[order], hash_versions(["v"] * 6)[order])
    table, skipped = sources_from_parquet_rows(
        pq.read_table(path), str(path), parquet_list_columns(str(path)), done=done
    )
    assert skipped == 5 and table.column("uri").to_pylist() == ["s3://photos/5.jpg"]

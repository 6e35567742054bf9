"""Listing the inputs on the cluster and dropping the done ones there, so the driver never
holds the listing.

A folder (local or an S3 prefix) is listed one folder per Ray task; a `.parquet` list (e.g. an
S3 Inventory export: the way in at 10M+ inputs) is read by Ray Data in parallel and resolved on
workers; a `.txt` list is read on the driver. Wherever the rows come from, the task that has
them drops the inputs the done-index knows (one vectorised look-up per block) and hands on the
rest in blocks of `SOURCES_PER_BLOCK` rows that stay in the object store. Only counts, folder
names and the scene candidates (rasters that may be read by window: `jobs.segment.scene_planning`) reach
the driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from connectors.listing import (
    IMAGE_EXTENSIONS,
    LIST_EXTENSIONS,
    SCENE_EXTENSIONS,
    SCENE_IF_LARGE_EXTENSIONS,
    ParquetList,
    Source,
    extension_of,
    item_id,
    list_directory,
    list_sources,
    open_parquet_list,
    read_parquet_list,
    source_of_row,
    sources_from_parquet_rows,
    sources_table,
)
from connectors.manifest import DoneIndex
from connectors.storage import S3Options, exists

from ..common.ray_startup import STAGE_OPTIONS

__all__ = ["SOURCES_PER_BLOCK", "DoneLookup", "Listing", "drop_done", "list_inputs"]

log = logging.getLogger(__name__)

#: Hands a task the done-index when it needs it (on a cluster: from the object store).
DoneLookup = Callable[[], DoneIndex]

#: Rows per block handed to the pipeline: one read task takes a block (reading and decoding its
#: inputs one after another), so blocks are small enough to spread a first night over a cluster.
SOURCES_PER_BLOCK = 64
#: Rows a worker resolves and checks against the done-index at once.
RESOLVE_BATCH = 4096
#: What a folder listing picks up: images, and rasters that only the scene path reads.
LISTED_EXTENSIONS = IMAGE_EXTENSIONS | SCENE_EXTENSIONS


@dataclass
class Listing:
    """What is left to do: sources in the object store, scene candidates on the driver."""

    dataset: ray.data.Dataset
    scene_candidates: list[Source]
    listed: int
    skipped: int


def drop_done(table: pa.Table, index: DoneIndex) -> tuple[pa.Table, int]:
    """``table`` without the files whose unchanged version is done, and how many were dropped.
    Tar shards always stay: their members are checked once the shard is read."""
    if not len(index) or not table.num_rows:
        return table, 0
    ids = [item_id(uri) for uri in table.column("uri").to_pylist()]
    is_file = np.asarray(pc.equal(table.column("kind"), "file").to_numpy(zero_copy_only=False), bool)
    done = index.is_done(ids, table.column("version")) & is_file
    return table.filter(pa.array(~done)), int(done.sum())


def _ends_with_any(paths: pa.ChunkedArray, extensions: frozenset[str]) -> pa.ChunkedArray:
    ends = [pc.ends_with(paths, ext) for ext in sorted(extensions)]
    found = ends[0]
    for more in ends[1:]:
        found = pc.or_(found, more)
    return found


def _split(table: pa.Table, scene_min_bytes: int) -> tuple[pa.Table, pa.Table]:
    """(images and shards, scene candidates): rasters the scene path may read (their headers
    decide, `jobs.segment.scene_planning`), and PNG/JPEG files of at least ``scene_min_bytes``."""
    lowered = pc.utf8_lower(table.column("relative_path"))
    large = pc.greater_equal(table.column("size"), scene_min_bytes)
    maybe = pc.or_(
        _ends_with_any(lowered, SCENE_EXTENSIONS),
        pc.and_(large, _ends_with_any(lowered, SCENE_IF_LARGE_EXTENSIONS)),
    )
    candidate = pc.and_(pc.equal(table.column("kind"), "file"), maybe)
    return table.filter(pc.invert(candidate)), table.filter(candidate)


def _blocks(table: pa.Table) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, SOURCES_PER_BLOCK):
        yield table.slice(start, SOURCES_PER_BLOCK)


@ray.remote(num_returns="streaming", **STAGE_OPTIONS)
def _list_folder(
    root: str, relative_dir: str, s3: S3Options, done: DoneLookup, scene_min_bytes: int
) -> Iterator[object]:
    """Yields blocks of image/shard sources to do, then (scene candidates, sub-folders, listed, skipped)."""
    sources, subfolders = list_directory(root, relative_dir, s3, LISTED_EXTENSIONS)
    todo, skipped = drop_done(sources_table(sources), done())
    images, candidates = _split(todo, scene_min_bytes)
    yield from _blocks(images)
    yield candidates, subfolders, len(sources), skipped


def _list_tree(root: str, s3: S3Options, done: DoneLookup, scene_min_bytes: int) -> Listing:
    blocks: list[ray.ObjectRef] = []
    candidates: list[Source] = []
    listed = skipped = 0
    pending = [_list_folder.remote(root, "", s3, done, scene_min_bytes)]
    while pending:
        count, dropped, subfolders = _gather(pending, blocks, candidates)
        listed, skipped = listed + count, skipped + dropped
        pending.extend(_list_folder.remote(root, sub, s3, done, scene_min_bytes) for sub in subfolders)
    if not listed:
        if not exists(root, s3):
            raise FileNotFoundError(f"input {root} does not exist")
        raise ValueError(f"no images found under {root}")
    return Listing(_dataset(blocks), candidates, listed, skipped)


def _dataset(blocks: list[ray.ObjectRef]) -> ray.data.Dataset:
    # ray.ObjectRef and ray.types.ObjectRef are one class that Ray's stubs spell twice.
    if not blocks:
        return ray.data.from_arrow(sources_table([]))
    return ray.data.from_arrow_refs(blocks)  # type: ignore[arg-type]  # see above


@ray.remote(num_returns="streaming", **STAGE_OPTIONS)
def _list_row_group(
    listing: ParquetList, row_group: int, s3: S3Options, done: DoneLookup, scene_min_bytes: int
) -> Iterator[object]:
    """One row group of a Parquet list: yields blocks to do, then (scene candidates, listed, skipped)."""
    index = done()
    candidates, listed, skipped = [], 0, 0
    for rows in read_parquet_list(listing, row_group, RESOLVE_BATCH, s3):
        sources, dropped = sources_from_parquet_rows(rows, listing.uri, listing.columns, s3, index)
        todo, more = drop_done(sources, index)
        images, scenes = _split(todo, scene_min_bytes)
        yield from _blocks(images)
        candidates.append(scenes)
        listed, skipped = listed + rows.num_rows, skipped + dropped + more
    yield pa.concat_tables(candidates) if candidates else sources_table([]), [], listed, skipped


def _gather(pending: list, blocks: list, candidates: list[Source]) -> tuple[int, int, list[str]]:
    """Collect one listing task: its blocks stay in the object store, the rest comes here."""
    refs = list(pending.pop())
    blocks.extend(refs[:-1])
    table, subfolders, listed, skipped = ray.get(refs[-1])
    candidates.extend(source_of_row(row) for row in table.to_pylist())
    return listed, skipped, subfolders


def _list_parquet(spec: str, s3: S3Options, done: DoneLookup, scene_min_bytes: int) -> Listing:
    listing = open_parquet_list(spec, s3)
    pending = [
        _list_row_group.remote(listing, group, s3, done, scene_min_bytes)
        for group in range(listing.row_groups)
    ]
    blocks: list[ray.ObjectRef] = []
    candidates: list[Source] = []
    listed = skipped = 0
    while pending:
        count, dropped, _ = _gather(pending, blocks, candidates)
        listed, skipped = listed + count, skipped + dropped
    if not listed:
        raise ValueError(f"no inputs listed in {spec}")
    return Listing(_dataset(blocks), candidates, listed, skipped)


def list_inputs(spec: str, s3: S3Options, done: DoneLookup, scene_min_bytes: int) -> Listing:
    """The input spec as what is left to do; raises for problems with the spec itself.
    PNG/JPEG files of at least ``scene_min_bytes`` join the scene candidates."""
    suffix = extension_of(spec.rstrip("/"))
    if suffix == ".parquet":
        return _list_parquet(spec, s3, done, scene_min_bytes)
    if suffix in LIST_EXTENSIONS:
        sources = list_sources(spec, s3)
        todo, skipped = drop_done(sources_table(sources), done())
        images, candidates = _split(todo, scene_min_bytes)
        rows = [source_of_row(row) for row in candidates.to_pylist()]
        return Listing(ray.data.from_arrow(images), rows, len(sources), skipped)
    return _list_tree(spec, s3, done, scene_min_bytes)

"""Compaction: fold the parts into one generation holding only the latest row per id.

Every batch adds a part, so without compaction start-up (listing and reading every part) grows
night after night. A compaction writes the new generation, publishes it with one atomic pointer
write that also names the parts it merged, and only then deletes those parts and the previous
generation. So a crash at any step leaves what readers see unchanged: before the pointer the new
files are an ignored orphan; after it, readers skip the merged parts whether or not they are
deleted yet, and the previous generation is no longer named. The next compaction finishes the
clean-up.

Parts that writers add meanwhile are not deleted (only parts that were listed are). Run one
compaction at a time per output root (e.g. from the job driver): two compactions racing could
delete each other's generation."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.manifest.layout import (
    COMPACTED_DIR,
    Pointer,
    list_generations,
    manifest_uri,
    new_generation_name,
    part_name,
    remove_files,
    remove_generation,
    write_pointer,
)
from connectors.manifest.reading import latest_rows, read_snapshot
from connectors.storage import S3Options, write_bytes_atomic

logger = logging.getLogger(__name__)

_ROW_GROUP_ROWS = 128 * 1024


@dataclass(frozen=True)
class CompactionResult:
    """What a compaction published: ``generation`` is "" when there was never anything to compact."""

    generation: str
    rows: int
    files: tuple[str, ...]
    parts_merged: int
    seconds: float


def _write_generation(
    output_root: str, latest: pa.Table, merged: frozenset[str], rows_per_file: int, s3: S3Options | None
) -> Pointer:
    """Write ``latest`` (sorted by id), which holds the ``merged`` parts, as a generation; not yet published."""
    generation = new_generation_name()
    files = []
    for number, start in enumerate(range(0, latest.num_rows, rows_per_file)):
        name = f"{COMPACTED_DIR}/{generation}/part-{number:05d}.parquet"
        buffer = io.BytesIO()
        pq.write_table(
            latest.slice(start, rows_per_file), buffer, compression="zstd", row_group_size=_ROW_GROUP_ROWS
        )
        write_bytes_atomic(manifest_uri(output_root, name), buffer.getvalue(), s3=s3)
        files.append(name)
    return Pointer(generation=generation, files=tuple(files), rows=latest.num_rows, merged=merged)


def _remove_unpublished(output_root: str, keep: str | None, s3: S3Options | None) -> None:
    """Delete every generation folder except ``keep``: superseded ones and orphans of crashed runs."""
    for generation in list_generations(output_root, s3):
        if generation != keep:
            remove_generation(output_root, generation, s3)


def _result(output_root: str, pointer: Pointer | None, parts_merged: int, started: float) -> CompactionResult:
    return CompactionResult(
        generation=pointer.generation if pointer else "",
        rows=pointer.rows if pointer else 0,
        files=tuple(manifest_uri(output_root, name) for name in pointer.files) if pointer else (),
        parts_merged=parts_merged,
        seconds=time.perf_counter() - started,
    )


def compact_manifest(
    output_root: str, s3: S3Options | None = None, rows_per_file: int = 1_000_000
) -> CompactionResult:
    """Merge the published generation and every part into a new generation, then drop what was merged.

    The new generation holds the latest row per id (as ``latest_rows`` picks it), sorted by id,
    in zstd Parquet files of at most ``rows_per_file`` rows. With no new parts nothing is
    rewritten; leftovers of an interrupted compaction are removed either way.
    """
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be at least 1, got {rows_per_file}")
    started = time.perf_counter()
    snapshot = read_snapshot(output_root, s3)
    if not snapshot.parts:
        # Only leftovers of an interrupted clean-up, which the published generation already holds.
        remove_files(snapshot.listed, s3)
        _remove_unpublished(output_root, snapshot.pointer.generation if snapshot.pointer else None, s3)
        return _result(output_root, snapshot.pointer, 0, started)

    merged = frozenset(part_name(uri) for uri in snapshot.listed)
    pointer = _write_generation(output_root, latest_rows(snapshot.table), merged, rows_per_file, s3)
    write_pointer(output_root, pointer, s3)
    remove_files(snapshot.listed, s3)
    _remove_unpublished(output_root, pointer.generation, s3)
    result = _result(output_root, pointer, len(snapshot.parts), started)
    logger.info(
        "compacted %d manifest parts into generation %s: %d rows in %d files, %.1f s",
        result.parts_merged,
        result.generation,
        result.rows,
        len(result.files),
        result.seconds,
    )
    return result

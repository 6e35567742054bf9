"""Where manifest files live under an output root, and the pointer that names the compacted generation.

Layout under ``<output>/manifest/``:

* ``part-<run_id>-<uuid>.parquet``: one immutable part per worker batch, directly in the folder;
* ``compacted/<generation>/part-NNNNN.parquet``: a compacted generation, the latest row per id;
* ``_compacted.json``: the pointer naming the one generation readers use, its files, and the parts
  merged into it that may still exist (readers skip those, so deleting them is never visible).

A generation folder the pointer does not name is an orphan (a crashed or superseded compaction):
readers never look at it. The pointer is the only file ever overwritten, and always atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.layout import MANIFEST_DIR
from connectors.storage import (
    S3Options,
    filesystem,
    join_uri,
    list_files,
    read_bytes,
    safe_output_uri,
    translated_errors,
    write_bytes_atomic,
)

logger = logging.getLogger(__name__)

PART_PREFIX = "part-"
COMPACTED_DIR = "compacted"
POINTER_NAME = "_compacted.json"
POINTER_FORMAT = 1


@dataclass(frozen=True)
class Pointer:
    """The published generation: its name, its files (relative to ``manifest/``), its rows, and the
    names of the parts it holds that were still there when it was published."""

    generation: str
    files: tuple[str, ...]
    rows: int
    merged: frozenset[str]


def manifest_uri(output_root: str, relative: str = "") -> str:
    """URI of ``relative`` inside the manifest folder (the folder itself when empty)."""
    folder = join_uri(output_root, MANIFEST_DIR)
    return safe_output_uri(folder, relative) if relative else folder


def new_generation_name() -> str:
    """A fresh generation name: UTC time first, so names sort by creation; a random tail keeps them unique."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def part_name(uri: str) -> str:
    """A part's file name, which is what the pointer's ``merged`` list holds."""
    return uri.rsplit("/", 1)[-1]


def list_parts(output_root: str, s3: S3Options | None = None) -> list[str]:
    """URIs of the uncompacted parts: ``*.parquet`` directly under ``manifest/``, sorted by name.

    Hidden (``.x``) and ``_x`` files such as temp files or markers are not parts.
    """
    try:
        entries = list_files(manifest_uri(output_root), {"parquet"}, s3=s3)
    except FileNotFoundError:
        return []
    return [
        entry.uri
        for entry in entries
        if "/" not in entry.relative_path and not entry.relative_path.startswith((".", "_"))
    ]


def list_generations(output_root: str, s3: S3Options | None = None) -> list[str]:
    """Names of every generation folder under ``manifest/compacted/``, published or not."""
    try:
        entries = list_files(manifest_uri(output_root, COMPACTED_DIR), s3=s3)
    except FileNotFoundError:
        return []
    return sorted({entry.relative_path.split("/", 1)[0] for entry in entries if "/" in entry.relative_path})


def read_pointer(output_root: str, s3: S3Options | None = None) -> Pointer | None:
    """The published generation, or None before the first compaction.

    A pointer that cannot be parsed raises ValueError: ignoring it would hide every compacted row.
    """
    uri = manifest_uri(output_root, POINTER_NAME)
    try:
        raw = read_bytes(uri, s3=s3)
    except FileNotFoundError:
        return None
    try:
        document = json.loads(raw)
        if document["format"] != POINTER_FORMAT:
            raise ValueError(f"format {document['format']!r}, expected {POINTER_FORMAT}")
        pointer = Pointer(
            generation=str(document["generation"]),
            files=tuple(str(name) for name in document["files"]),
            rows=int(document["rows"]),
            merged=frozenset(str(name) for name in document["merged"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{uri}: unreadable compacted-manifest pointer ({exc})") from None
    prefix = f"{COMPACTED_DIR}/{pointer.generation}/"
    strays = [name for name in pointer.files if not name.startswith(prefix) or ".." in name.split("/")]
    if not pointer.generation or "/" in pointer.generation or strays:
        raise ValueError(f"{uri}: pointer names files outside its generation folder: {strays}")
    return pointer


def write_pointer(output_root: str, pointer: Pointer, s3: S3Options | None = None) -> str:
    """Publish ``pointer`` atomically and return its URI: from then on readers use its generation."""
    document = {
        "format": POINTER_FORMAT,
        "generation": pointer.generation,
        "files": list(pointer.files),
        "rows": pointer.rows,
        "merged": sorted(pointer.merged),
        "published_at": datetime.now(UTC).isoformat(),
    }
    uri = manifest_uri(output_root, POINTER_NAME)
    write_bytes_atomic(uri, json.dumps(document, indent=1).encode("utf-8"), s3=s3)
    return uri


def remove_files(uris: Sequence[str], s3: S3Options | None = None) -> None:
    """Delete ``uris`` (all under one root); files already gone are fine."""
    if not uris:
        return
    fs, _ = filesystem(uris[0], s3)
    paths = [filesystem(uri, s3)[1] for uri in uris]
    with translated_errors(uris[0], s3):
        try:
            fs.rm(paths)
        except FileNotFoundError:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(path)


def remove_generation(output_root: str, generation: str, s3: S3Options | None = None) -> None:
    """Delete a generation folder and everything in it."""
    uri = manifest_uri(output_root, f"{COMPACTED_DIR}/{generation}")
    fs, path = filesystem(uri, s3)
    with translated_errors(uri, s3), contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)
    logger.info("removed manifest generation %s", uri)

"""The gallery's files: each selected input's image and mask decoded small, written as thumbnails.

Every problem (missing, unreadable, too large, a tar member, a mask of another size) becomes a
note naming the file, never an exception, so one bad file cannot stop the report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from connectors.storage import (
    LOCAL_SCHEMES,
    S3Options,
    filesystem,
    join_uri,
    open_input,
    read_bytes,
    write_bytes_atomic,
)
from connectors.thumbnails import Preview, Thumbnail, preview, triptych

#: Remote files larger than this are not downloaded for a thumbnail (local ones are read lazily).
MAX_REMOTE_PREVIEW_BYTES = 256 * 1024 * 1024
_FETCH_THREADS = 8


def mask_location(row: dict[str, Any], run_root: str) -> str | None:
    """Where the row's mask is under ``run_root``: the manifest's ``mask_uri`` re-rooted there.

    The job writes masks to ``<output>/masks/<relative path with .png or .tif>``; when
    ``mask_uri`` ends with that key, the same key under ``run_root`` is used, so a run copied or
    moved (or written with a relative path from another folder) still finds its masks.
    """
    uri, relative = row.get("mask_uri"), row.get("relative_path")
    if not uri or not relative:
        return uri
    key = f"masks/{PurePosixPath(relative).with_suffix(PurePosixPath(uri).suffix)}"
    return join_uri(run_root, key) if uri.endswith("/" + key) else uri


def _is_tar_member(uri: str) -> bool:
    shard, sep, _ = uri.partition("#")
    return bool(sep) and shard.lower().endswith(".tar")


def load_preview(uri: str | None, role: str, s3: S3Options | None, max_side: int) -> Preview:
    """Decode ``uri`` at thumbnail scale; every problem becomes a reason naming the file."""
    if not uri:
        return Preview.unavailable(f"no {role} recorded in the manifest")
    if _is_tar_member(uri):
        return Preview.unavailable(f"{role} {uri} is a tar member: not extracted for the report")
    is_mask = role == "mask"
    try:
        scheme = uri.partition("://")[0].lower() if "://" in uri else ""
        if scheme in LOCAL_SCHEMES:
            with open_input(uri, s3) as handle:  # Pillow reads only the headers and pages it needs
                return preview(handle, max_side, name=uri, mask=is_mask)
        fs, path = filesystem(uri, s3)
        size = int(fs.info(path).get("size") or 0)
        if size > MAX_REMOTE_PREVIEW_BYTES:
            return Preview.unavailable(f"{uri}: {size / 2**20:.0f} MiB is too large to fetch for a thumbnail")
        return preview(read_bytes(uri, s3), max_side, name=uri, mask=is_mask)
    except FileNotFoundError:
        return Preview.unavailable(f"missing {role}: {uri}")
    except Exception as exc:  # one unreadable file (credentials, network, format) must not stop the report
        return Preview.unavailable(f"cannot read {role} {uri}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class GalleryCells:
    """The written thumbnails of one input (relative paths under the report) and their notes."""

    image: str | None
    overlay: str | None
    cutout: str | None
    notes: dict[str, str]
    problems: list[str]


def _gallery_cells(
    row: dict[str, Any], run_root: str, report_root: str, s3: S3Options | None, max_side: int
) -> GalleryCells:
    image = load_preview(row.get("source_uri"), "image", s3, max_side)
    mask = load_preview(mask_location(row, run_root), "mask", s3, max_side)
    problems = [p.reason for p in (image, mask) if p.reason]
    written: dict[str, str | None] = {}
    notes: dict[str, str] = {}
    stem = _thumbnail_stem(row["id"])
    for kind, cell in zip(("image", "overlay", "cutout"), triptych(image, mask), strict=True):
        written[kind] = _write_thumbnail(cell, f"thumbs/{stem}-{kind}.png", report_root, s3)
        if cell.note:
            notes[kind] = cell.note
    if image.image is not None and mask.image is not None and notes.get("overlay"):
        problems.append(f"{row.get('relative_path')}: {notes['overlay']} (unpaired files?)")
    return GalleryCells(written["image"], written["overlay"], written["cutout"], notes, problems)


def _thumbnail_stem(row_id: str) -> str:
    """The row id (16 hex digits from the job) as a file name; anything else is hashed first."""
    if re.fullmatch(r"[0-9A-Za-z_-]{1,64}", row_id):
        return row_id
    return hashlib.sha1(row_id.encode("utf-8")).hexdigest()[:16]


def _write_thumbnail(cell: Thumbnail, relative: str, report_root: str, s3: S3Options | None) -> str | None:
    if cell.png is None:
        return None
    write_bytes_atomic(join_uri(report_root, relative), cell.png, s3)
    return relative


def build_gallery(
    rows: Sequence[dict[str, Any]], run_root: str, report_root: str, s3: S3Options | None, max_side: int
) -> dict[str, GalleryCells]:
    """Thumbnails for each distinct input of ``rows`` (fetched concurrently), keyed by id."""
    unique = list({row["id"]: row for row in rows}.values())
    with ThreadPoolExecutor(max_workers=_FETCH_THREADS) as pool:
        cells = pool.map(lambda row: _gallery_cells(row, run_root, report_root, s3, max_side), unique)
        return {row["id"]: cell for row, cell in zip(unique, cells, strict=True)}

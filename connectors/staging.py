"""Staged scene chunks that outlive a run: where they are kept, and when they must go.

A scene's chunks are staged as they are segmented and assembled into its mask when the last one
lands. A run killed in between keeps them, and the next run reuses every staged chunk instead of
segmenting it again, but only while nothing that decides a chunk's pixels has changed. So the
folder of a scene's chunks is keyed by two things:

    <staging root>/<settings key>/<scene id>-<version key>/<row>_<col>.tif

* the settings key: a digest of the model, its weights' identity, precision and every tiling
  setting (``settings_key``); a run with other settings looks in another folder;
* the scene's id and a digest of its version (ETag or mtime), so an edited scene starts over.

``sweep_staging`` removes what no later run can reuse: folders of other settings, and scene
folders nothing has written to for longer than the configured age (a scene that was deleted, or
that keeps failing). A scene's folder is also removed once its manifest row is committed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from connectors.storage import S3Options, call_with_retries, filesystem, join_uri

__all__ = ["scene_staging_uri", "settings_key", "sweep_staging"]

log = logging.getLogger(__name__)


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short digest of ``settings`` (JSON-able values), independent of key order."""
    return _digest(json.dumps(settings, sort_keys=True, default=str), 16)


def scene_staging_uri(staging_root: str, settings: str, scene_id: str, version: str) -> str:
    """The folder of one scene version's chunks under settings key ``settings``."""
    return join_uri(staging_root, f"{settings}/{scene_id}-{_digest(version, 12)}")


def _modified(info: Mapping[str, Any]) -> float:
    """POSIX time of a listed file's last write (local mtime, S3 LastModified, memory created)."""
    stamp = info.get("mtime", info.get("LastModified", info.get("created")))
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return float(stamp) if isinstance(stamp, int | float) else 0.0


def _folders(fs: Any, path: str) -> list[str]:
    try:
        entries = cast(list[dict[str, Any]], fs.ls(path, detail=True))
    except FileNotFoundError:
        return []
    return [e["name"].rstrip("/") for e in entries if e.get("type") == "directory"]


def _newest_write(fs: Any, path: str) -> float:
    found = cast(dict[str, dict[str, Any]], fs.find(path, detail=True))
    return max((_modified(info) for info in found.values()), default=0.0)


def sweep_staging(
    staging_root: str, keep_settings: str, older_than: float, s3: S3Options | None = None
) -> int:
    """Remove staged chunks no run with settings ``keep_settings`` can reuse; returns folders removed.

    Removed: every settings folder but ``keep_settings``, and each scene folder under it whose
    newest file was written before ``older_than`` (POSIX time). Run it before a run stages
    anything, as ``remove_interrupted_writes`` is. Store faults are retried as every storage
    call is (StorageUnavailableError when the store stays away); a repeated sweep is harmless.
    """
    fs, root = filesystem(staging_root, s3)

    def stale() -> list[str]:
        found = []
        for folder in _folders(fs, root):
            if folder.rsplit("/", 1)[-1] != keep_settings:
                found.append(folder)
            else:
                found += [scene for scene in _folders(fs, folder) if _newest_write(fs, scene) < older_than]
        return found

    folders = call_with_retries("listing staging", staging_root, s3, stale)
    for path in folders:
        call_with_retries(
            "removing stale staging", staging_root, s3, functools.partial(fs.rm, path, recursive=True)
        )
        log.info("removed stale staging %s", path)
    return len(folders)

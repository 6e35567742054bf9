"""DIS5K-style training sets: ``<dataset>/im/`` images paired with ``<dataset>/gt/`` masks by stem.

A root is one dataset (``DIS-TR/im``, ``DIS-TR/gt``) or a folder of them (``datasets/DIS-TR/...``,
``datasets/HRSOD/...``), local or on S3. Inside ``im/`` and ``gt/`` files pair by their path
without the extension, so ``im/a/x.jpg`` pairs with ``gt/a/x.png``; any image format counts.
Training on a set where some images have no mask (or masks no image) is almost always a copy
gone wrong, so `list_training_pairs` refuses it and names the files.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pyarrow as pa

from connectors.sources import IMAGE_EXTENSIONS
from connectors.storage import S3Options, list_files

__all__ = [
    "IMAGE_DIR",
    "MASK_DIR",
    "TrainingPair",
    "UnpairedFilesError",
    "list_training_pairs",
    "pairs_table",
]

IMAGE_DIR, MASK_DIR = "im", "gt"
_LISTED = 20


class UnpairedFilesError(ValueError):
    """Images without masks or masks without images (or two files for one stem) under a training root."""


@dataclass(frozen=True)
class TrainingPair:
    key: str  # "<dataset>/<path without extension>"
    dataset: str
    image_uri: str
    mask_uri: str


def _split(relative_path: str) -> tuple[str, str, str] | None:
    """(dataset, "im" or "gt", stem path) for a file under an im/ or gt/ folder, else None."""
    parts = relative_path.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in (IMAGE_DIR, MASK_DIR):
            stem = posixpath.splitext("/".join(parts[i + 1 :]))[0]
            return "/".join(parts[:i]), parts[i], stem
    return None


def _names(label: str, names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return f"{len(names)} {label}: {shown}{more}"


def list_training_pairs(root: str, s3: S3Options | None = None) -> list[TrainingPair]:
    """Every image/mask pair under ``root``, sorted by key.

    Raises FileNotFoundError for a missing root, UnpairedFilesError naming the files for a root
    with no ``im/`` and ``gt/`` folders, unpaired files, or two files for one stem in one folder.
    """
    found: dict[tuple[str, str], dict[str, list[str]]] = {}
    for entry in list_files(root, set(IMAGE_EXTENSIONS), s3):
        split = _split(entry.relative_path)
        if split is not None:
            dataset, kind, stem = split
            found.setdefault((dataset, stem), {IMAGE_DIR: [], MASK_DIR: []})[kind].append(entry.uri)
    if not found:
        raise UnpairedFilesError(f"{root}: no images under im/ and masks under gt/ folders (DIS5K layout)")
    problems: dict[str, list[str]] = {
        "images without a mask": [],
        "masks without an image": [],
        "stems with several files": [],
    }
    pairs = []
    for (dataset, stem), files in sorted(found.items()):
        images, masks = files[IMAGE_DIR], files[MASK_DIR]
        if len(images) > 1 or len(masks) > 1:
            problems["stems with several files"].extend(images + masks if len(images) > 1 else masks)
        elif not masks:
            problems["images without a mask"].extend(images)
        elif not images:
            problems["masks without an image"].extend(masks)
        else:
            key = f"{dataset}/{stem}" if dataset else stem
            pairs.append(
                TrainingPair(key, dataset or posixpath.basename(root.rstrip("/")), images[0], masks[0])
            )
    reported = [_names(label, names) for label, names in problems.items() if names]
    if reported:
        raise UnpairedFilesError(f"{root}: " + "; ".join(reported))
    return pairs


def pairs_table(pairs: list[TrainingPair]) -> pa.Table:
    """The pairs as the small table a Ray Data pipeline starts from (URIs only, no pixels)."""
    return pa.table(
        {
            "key": [p.key for p in pairs],
            "dataset": [p.dataset for p in pairs],
            "image_uri": [p.image_uri for p in pairs],
            "mask_uri": [p.mask_uri for p in pairs],
        }
    )

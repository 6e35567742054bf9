"""Pairing predicted masks with ground-truth masks, and reading masks as 8-bit grey arrays.

Predictions and ground truth are matched by a *key*: the file's path relative to its root, without
the extension (a ``.jpg`` prediction pairs with a ``.png`` mask) and without layout folders:

* ``gt`` and ``masks`` are *marker* folders. When any file of a tree lies under one (a DIS5K root
  with ``DIS-VD/gt/`` beside ``DIS-VD/im/``; a segmentation output root with ``masks/`` beside
  ``cutouts/``), only files under a marker folder count, and the marker is dropped from the key:
  ``DIS-VD/gt/x.png`` and ``masks/DIS-VD/x.png`` both have the key ``DIS-VD/x``.
* ``im`` (DIS5K's image folder, mirrored into the mask tree when a whole DIS5K root was
  segmented) is dropped from keys too: ``masks/DIS-VD/im/x.png`` also has the key ``DIS-VD/x``.

Only exact, lower-case directory names count; file names are never dropped. Ground truth under
``<name>/gt/`` belongs to the dataset ``<name>``; everything else to the default dataset (the
ground-truth root's name, or its parent's when the root itself is a ``gt`` folder).

When two files of one tree have the same key (``x.png`` and ``x.jpg``), the ``.png`` wins, then
the first by path; the others are reported in ``duplicates``. Nothing here raises for an
unpaired file: they are returned by name so the caller can report them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow.compute as pc

from connectors.images import decode_image
from connectors.manifest import latest_rows, read_manifest
from connectors.sources import IMAGE_EXTENSIONS
from connectors.storage import S3Options, join_uri, list_files, read_bytes, uri_scheme

__all__ = [
    "DROPPED_DIRS",
    "MARKER_DIRS",
    "MaskPair",
    "PairingResult",
    "dataset_name_of",
    "decode_mask",
    "mask_key",
    "pair_masks",
    "pairs_from_manifest",
    "read_mask",
]

#: Folders that hold masks; in a tree that has any, files elsewhere are ignored.
MARKER_DIRS = frozenset({"gt", "masks"})
#: Folders dropped from keys: the markers, and DIS5K's image folder mirrored into mask trees.
DROPPED_DIRS = MARKER_DIRS | {"im"}
_HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class MaskPair(NamedTuple):
    """One prediction and its ground truth; ``key`` is unique across all datasets."""

    key: str
    pred_uri: str
    gt_uri: str
    dataset: str


@dataclass
class PairingResult:
    """Pairs in deterministic order (dataset, then key), and every file left out, by relative path.

    ``missing_pred``: ground-truth masks with no prediction (paths relative to the GT root).
    ``unpaired_pred``: predictions with no ground truth (relative to the prediction root, or the
    input's ``relative_path`` for a run's manifest). ``duplicates``: files whose key was already
    taken by another file of the same tree.
    """

    pairs: list[MaskPair]
    missing_pred: list[str] = field(default_factory=list)
    unpaired_pred: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        """Dataset names in order of first appearance (pairs are sorted by dataset)."""
        return list(dict.fromkeys(pair.dataset for pair in self.pairs))


def _dirs_and_stem(relative_path: str) -> tuple[list[str], str]:
    parts = relative_path.split("/")
    return parts[:-1], posixpath.splitext(parts[-1])[0]


def mask_key(relative_path: str) -> str:
    """``DIS-VD/gt/x.png`` -> ``DIS-VD/x``: no extension, no ``gt``/``masks``/``im`` folders."""
    dirs, stem = _dirs_and_stem(relative_path)
    return "/".join([d for d in dirs if d not in DROPPED_DIRS] + [stem])


def _under_marker(relative_path: str) -> bool:
    return any(d in MARKER_DIRS for d in _dirs_and_stem(relative_path)[0])


def _dataset_of(relative_path: str, default: str) -> str:
    """Folders above the first ``gt``/``masks`` folder name the dataset; none: ``default``."""
    dirs, _ = _dirs_and_stem(relative_path)
    for i, name in enumerate(dirs):
        if name in MARKER_DIRS:
            return "/".join(d for d in dirs[:i] if d not in DROPPED_DIRS) or default
    return default


def dataset_name_of(gt_root: str) -> str:
    """Default dataset name: the root's last folder, or its parent's when that is ``gt``/``masks``."""
    path = gt_root.partition("://")[2] if uri_scheme(gt_root) else gt_root
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    while parts and parts[-1] in MARKER_DIRS:
        parts.pop()
    return parts[-1] if parts else "dataset"


def _preference(relative_path: str) -> tuple[bool, str]:
    return (posixpath.splitext(relative_path)[1].lower() != ".png", relative_path)


def _index(relative_paths: Iterable[tuple[str, str]], duplicates: list[str]) -> dict[str, tuple[str, str]]:
    """key -> (relative path, uri), keeping files under marker folders when there are any."""
    items = list(relative_paths)
    if any(_under_marker(rel) for rel, _ in items):
        items = [(rel, uri) for rel, uri in items if _under_marker(rel)]
    index: dict[str, tuple[str, str]] = {}
    for rel, uri in sorted(items, key=lambda item: _preference(item[0])):
        key = mask_key(rel)
        if key in index:
            duplicates.append(rel)
        else:
            index[key] = (rel, uri)
    return index


def _list_masks(root: str, s3: S3Options | None) -> list[tuple[str, str]]:
    return [(entry.relative_path, entry.uri) for entry in list_files(root, set(IMAGE_EXTENSIONS), s3=s3)]


def _pair(
    predictions: dict[str, tuple[str, str]],
    gt_root: str,
    dataset_name: str | None,
    duplicates: list[str],
    s3: S3Options | None,
) -> PairingResult:
    truth = _index(_list_masks(gt_root, s3), duplicates)
    default = dataset_name or dataset_name_of(gt_root)
    pairs = [
        MaskPair(key, predictions[key][1], gt_uri, _dataset_of(gt_rel, default))
        for key, (gt_rel, gt_uri) in truth.items()
        if key in predictions
    ]
    pairs.sort(key=lambda pair: (pair.dataset, pair.key))
    return PairingResult(
        pairs=pairs,
        missing_pred=sorted(rel for key, (rel, _) in truth.items() if key not in predictions),
        unpaired_pred=sorted(rel for key, (rel, _) in predictions.items() if key not in truth),
        duplicates=sorted(duplicates),
    )


def pair_masks(
    pred_root: str, gt_root: str, s3: S3Options | None = None, dataset_name: str | None = None
) -> PairingResult:
    """Match the image files under ``pred_root`` with those under ``gt_root`` by key (module docstring).

    ``dataset_name`` overrides the default dataset name (pairs whose ground truth is not inside a
    ``<name>/gt/`` folder). A root that does not exist raises FileNotFoundError naming it.
    """
    duplicates: list[str] = []
    predictions = _index(_list_masks(pred_root, s3), duplicates)
    return _pair(predictions, gt_root, dataset_name, duplicates, s3)


def _run_mask_uri(run_root: str, relative_path: str, mask_uri: str) -> str:
    """Where a run's mask is now: re-rooted under ``run_root`` when it has the run's layout.

    ``mask_uri`` is where the job wrote it, possibly a path relative to the job's working
    directory, or a bucket the run was since copied from; ``masks/<relative path>.<ext>`` under
    the given root is the same file wherever the run lives now.
    """
    tail = "masks/" + posixpath.splitext(relative_path)[0]
    stem, ext = posixpath.splitext(mask_uri)
    if stem.endswith("/" + tail) or stem == tail:
        return join_uri(run_root, tail + ext)
    return mask_uri


def pairs_from_manifest(
    run_root: str, gt_root: str, s3: S3Options | None = None, dataset_name: str | None = None
) -> PairingResult:
    """Pair a segmentation run's masks (newest ``ok`` manifest row per input) with ground truth.

    Predictions are keyed by the input's ``relative_path`` (``mask_key`` rules), so a run over
    ``DIS-VD/im/x.jpg`` pairs with ``DIS-VD/gt/x.png``. A ``mask_uri`` of the job's layout
    (``.../masks/<relative path>.png``) is read from ``run_root/masks/...``, so a run that was
    copied or moved (or written with a relative ``--output``) is still found. Inputs whose latest
    row is an error have no mask and show up in ``missing_pred``.
    """
    table = latest_rows(read_manifest(run_root, s3))
    table = table.filter(
        pc.and_(pc.equal(table.column("status"), "ok"), pc.is_valid(table.column("mask_uri")))
    )
    rows = zip(table.column("relative_path").to_pylist(), table.column("mask_uri").to_pylist(), strict=True)
    duplicates: list[str] = []
    predictions: dict[str, tuple[str, str]] = {}
    for rel, uri in sorted(((rel or uri, uri) for rel, uri in rows), key=lambda item: item[0]):
        key = mask_key(rel)
        if key in predictions:
            duplicates.append(rel)
        else:
            predictions[key] = (rel, _run_mask_uri(run_root, rel, uri))
    return _pair(predictions, gt_root, dataset_name, duplicates, s3)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """16/32-bit integer data scaled from 0..65535 (rounded), as birefnet_core.preprocessing does."""
    top = 65535 if array.dtype == np.uint16 or array.max(initial=0) > 255 else 255
    clipped = np.clip(array, 0, top).astype(np.uint32)
    return ((clipped * 255 + top // 2) // top).astype(np.uint8)


def read_mask(uri: str, s3: S3Options | None = None) -> np.ndarray:
    """The mask at ``uri`` as a contiguous H x W uint8 array (see `decode_mask`).

    A missing file raises FileNotFoundError and an unreadable one ImageDecodeError, both naming ``uri``.
    """
    return decode_mask(read_bytes(uri, s3), uri)


def decode_mask(data: bytes, name: str) -> np.ndarray:
    """A mask file's bytes as a contiguous H x W uint8 array; errors name ``name``.

    Grey masks are returned as stored; colour, palette and binary images go through Pillow's
    ``convert("L")`` (alpha ignored, as the reference's ``cv2.IMREAD_GRAYSCALE``); 16-bit masks are
    scaled to 0..255, float (``F``) masks are taken as 0..255 and rounded.
    """
    image = decode_image(data, name)
    if image.mode in _HIGH_BIT_MODES:
        array = _to_uint8(np.asarray(image))
    elif image.mode == "F":
        array = np.clip(np.nan_to_num(np.asarray(image)), 0, 255).round().astype(np.uint8)
    else:
        array = np.asarray(image if image.mode == "L" else image.convert("L"))
    return np.ascontiguousarray(array)

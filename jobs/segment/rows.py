"""The rows the segmentation job's stages pass on: row <-> column conversion for Ray Data batches
(dict of NumPy arrays), the columns image and scene stages share, and what every row of a run shares.

Light on purpose: the scene path's CPU workers import this, never the model's modules."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from birefnet_core.size import Size
from birefnet_core.variants import get_variant
from connectors.manifest import ManifestRow, RunRef

__all__ = [
    "CHUNK_STATUS_KEYS",
    "INFERRED_KEYS",
    "MODEL_KEYS",
    "NO_ERROR",
    "PREPARED_KEYS",
    "RECORD_KEYS",
    "TILE_KEYS",
    "column_batch",
    "rows_of",
    "run_ref",
    "status_columns",
]

#: Which model made a row's probabilities; inference adds them, the manifest keeps them.
MODEL_KEYS = ("weights_sha256", "weights_source", "dtype", "backend")
#: "No error" in a column: Ray Data turns all-None object columns into float NaN.
NO_ERROR = ""

# The columns of each stage's batches, in pipeline order.
#: An image read (or its read error): ReadStage.
RECORD_KEYS = ("id", "uri", "relative_path", "name", "version", "size", "data", "error", "box")
#: Decoded and resized for the network: PrepareStage.
PREPARED_KEYS = (*RECORD_KEYS, "pixels", "height", "width", "decode_seconds")
#: Probabilities at working size, and the model that made them: InferenceStage.
INFERRED_KEYS = (*RECORD_KEYS, "probs", "height", "width", "decode_seconds", "infer_seconds", *MODEL_KEYS)
#: One scene chunk's tiles: ChunkTileStage.
TILE_KEYS = (
    "scene_id",
    "uri",
    "chunk",
    "scene_size",
    "staging",
    "bands",
    "scaling",
    "tiles",
    "pixels",
    "valid",
    "error",
    "decode_seconds",
)
#: What a blended chunk (ChunkBlendStage) hands the driver: small, whatever the chunk's size.
CHUNK_STATUS_KEYS = ("scene_id", "chunk", "error", "decode_seconds", "infer_seconds", "encode_seconds",
                     *MODEL_KEYS, "tile_count")  # fmt: skip


def rows_of(batch: Mapping[str, Sequence[Any] | np.ndarray]) -> Iterator[dict[str, Any]]:
    columns = list(batch)
    size = len(batch[columns[0]]) if columns else 0
    for i in range(size):
        yield {c: batch[c][i] for c in columns}


def column_batch(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns for `keys`; arrays of equal shape are stacked, anything else becomes an object column."""
    out: dict[str, np.ndarray] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        arrays = [v for v in values if isinstance(v, np.ndarray)]
        if values and len(arrays) == len(values) and len({a.shape for a in arrays}) == 1:
            out[key] = np.stack(arrays)
        else:
            column = np.empty(len(values), dtype=object)
            column[:] = values
            out[key] = column
    return out


def status_columns(rows: list[ManifestRow]) -> dict[str, np.ndarray]:
    """What a pipeline hands the driver per committed row: id, status and error ("" for none)."""
    return column_batch(
        [{"id": r.input.id, "status": r.status, "error": r.error or NO_ERROR} for r in rows],
        ("id", "status", "error"),
    )


def run_ref(run_id: str, variant: str, size: Size | None) -> RunRef:
    """What every image row of a run shares; the manifest spells the working size WIDTHxHEIGHT."""
    size = size or get_variant(variant).size
    return RunRef(run_id, variant, f"{size.width}x{size.height}" if size else "dynamic")

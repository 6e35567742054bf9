"""Row <-> column conversion for Ray Data batches (dict of NumPy arrays), and the columns that
image and scene stages share.

Light on purpose: the scene path's CPU workers import this, never the model's modules."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from connectors.manifest import ManifestRow

__all__ = ["MODEL_KEYS", "NO_ERROR", "column_batch", "rows_of", "status_columns"]

#: Which model made a row's probabilities; inference adds them, the manifest keeps them.
MODEL_KEYS = ("weights_sha256", "weights_source", "dtype", "backend")
#: "No error" in a column: Ray Data turns all-None object columns into float NaN.
NO_ERROR = ""


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

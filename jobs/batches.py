"""Row <-> column conversion for Ray Data batches (dict of NumPy arrays)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["column_batch", "rows_of"]


def rows_of(batch: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    columns = list(batch)
    size = len(batch[columns[0]]) if columns else 0
    for i in range(size):
        yield {c: batch[c][i] for c in columns}


def column_batch(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns for `keys`; arrays of equal shape are stacked, anything else becomes an object column."""
    out: dict[str, np.ndarray] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if values and all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1:
            out[key] = np.stack(values)
        else:
            column = np.empty(len(values), dtype=object)
            column[:] = values
            out[key] = column
    return out

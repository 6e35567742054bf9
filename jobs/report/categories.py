"""Which masks the gallery shows: its sections, and the rows picked for each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .rows import RowFilter, ok_flag, ok_with


@dataclass(frozen=True)
class Category:
    """One gallery section: rows passing ``where``, ordered by ``column``."""

    key: str
    title: str
    why: str
    column: str
    descending: bool
    where: RowFilter


CATEGORIES: tuple[Category, ...] = (
    Category(
        "lowest-confidence",
        "Lowest mean confidence",
        "Masks the model hesitated on most (mean |2p - 1| closest to 0).",
        "mean_confidence",
        False,
        ok_with("mean_confidence"),
    ),
    Category(
        "most-uncertain",
        "Most uncertain pixels",
        "Largest share of pixels with 0.1 < p < 0.9; soft hair and fur edges are normal, large areas are not.",
        "uncertain_fraction",
        True,
        ok_with("uncertain_fraction"),
    ),
    Category(
        "empty",
        "Empty masks",
        "Under 0.1% foreground: nothing found, a miss, or a blank input.",
        "foreground_fraction",
        False,
        ok_flag("is_empty"),
    ),
    Category(
        "full",
        "Full masks",
        "Over 99.9% foreground: usually the background was taken for the object.",
        "foreground_fraction",
        True,
        ok_flag("is_full"),
    ),
    Category(
        "seams",
        "Highest seam disagreement",
        "Tiled scenes whose overlapping tiles disagreed most: look for visible seams.",
        "seam_disagreement",
        True,
        ok_with("seam_disagreement"),
    ),
)

#: Per category: its first rows (as dicts) and how many rows qualify.
Selection = list[tuple[Category, list[dict[str, Any]], int]]


def select_gallery(table: pa.Table, size: int) -> Selection:
    """Per category: its first ``size`` rows (ties broken by relative path) and how many qualify."""
    selected = []
    for category in CATEGORIES:
        rows = table.filter(category.where(table))
        order = "descending" if category.descending else "ascending"
        rows = rows.sort_by([(category.column, order), ("relative_path", "ascending")])
        selected.append((category, rows.slice(0, size).to_pylist(), rows.num_rows))
    return selected

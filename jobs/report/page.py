"""The report page: the numbers, figures and gallery rendered through an autoescaping Jinja2 template.

Everything from the manifest (file names, error messages, run ids) reaches the page only through
the template, which HTML-escapes every value; the template holds the markup, this module only
shapes and formats the values.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from .categories import Selection
from .figures import FIGURE_SIZE
from .gallery import GalleryCells
from .statistics import WEIGHTS_COLUMN, ReportSummary, RunStats

TEMPLATE = "report.html.j2"
#: Up to this many run ids are named in the page header; more are only counted.
MAX_NAMED_RUNS = 5
_CELLS = (("image", "image"), ("overlay", "mask overlay"), ("cutout", "cut-out"))
_SIGNALS = (
    ("mean_confidence", "confidence", "{:.3f}"),
    ("uncertain_fraction", "uncertain", "{:.1%}"),
    ("foreground_fraction", "foreground", "{:.1%}"),
    ("seam_disagreement", "seam", "{:.4f}"),
)


def duration(seconds: float | None) -> str:
    """Seconds as seconds, minutes or hours, whichever reads best."""
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def percent(part: int, whole: int) -> str:
    """``part`` as a share of ``whole``; n/a for an empty whole."""
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def utc_time(moment: datetime | None) -> str:
    """A manifest timestamp in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "n/a"


_ENVIRONMENT = Environment(
    loader=PackageLoader("jobs.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENVIRONMENT.filters.update(duration=duration, percent=percent, utc_time=utc_time)


def _time_split(runs: list[RunStats]) -> list[tuple[str, float, float]]:
    """(stage, seconds, percent of all stages) summed over the runs; empty when nothing was timed."""
    parts = (
        ("decode", sum(r.decode_seconds for r in runs)),
        ("infer", sum(r.infer_seconds for r in runs)),
        ("encode", sum(r.encode_seconds for r in runs)),
    )
    total = sum(seconds for _, seconds in parts)
    return [(stage, seconds, 100 * seconds / total) for stage, seconds in parts] if total > 0 else []


def _signals(row: dict[str, Any]) -> list[str]:
    """The one-line description of a gallery entry: its signals, size, tiles and run."""
    parts = [
        f"{label} {fmt.format(row[column])}" for column, label, fmt in _SIGNALS if row.get(column) is not None
    ]
    if row.get("width") and row.get("height"):
        parts.append(f"{row['width']}x{row['height']} px")
    if (row.get("tile_count") or 1) > 1:
        parts.append(f"{row['tile_count']} tiles")
    parts.append(f"run {row['run_id']}")
    return parts


def _entry(row: dict[str, Any], cells: GalleryCells) -> dict[str, Any]:
    name = row.get("relative_path") or row["source_uri"]
    return {
        "name": name,
        "signals": _signals(row),
        "cells": [
            {
                "path": getattr(cells, kind),
                "caption": caption,
                "note": cells.notes.get(kind),
                "alt": f"{caption} of {name}",
            }
            for kind, caption in _CELLS
        ],
    }


def _gallery(selected: Selection, cells: dict[str, GalleryCells]) -> list[dict[str, Any]]:
    """The gallery sections to show; the seams section only for runs with tiled scenes."""
    return [
        {
            "category": category,
            "shown": f"{len(rows)} of {total}" if total > len(rows) else f"{total}",
            "total": total,
            "entries": [_entry(row, cells[row["id"]]) for row in rows],
        }
        for category, rows, total in selected
        if category.key != "seams" or total > 0
    ]


def render_html(
    run_root: str,
    run_ids: Sequence[str],
    summary: ReportSummary,
    figures: list[tuple[str, bytes]],
    selected: Selection,
    cells: dict[str, GalleryCells],
) -> str:
    """The whole page as one string; everything from the manifest is HTML-escaped."""
    width, height = (round(side * 100) for side in FIGURE_SIZE)
    return _ENVIRONMENT.get_template(TEMPLATE).render(
        run_root=run_root,
        runs=", ".join(run_ids) if len(run_ids) <= MAX_NAMED_RUNS else f"{len(run_ids)} runs",
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        random_weights="random" in summary.settings.get(WEIGHTS_COLUMN, {}),
        summary=summary,
        settings=[(column, values.most_common()) for column, values in summary.settings.items() if values],
        time_split=_time_split(summary.runs),
        figures=[(caption, base64.b64encode(png).decode("ascii")) for caption, png in figures],
        figure_width=width,
        figure_height=height,
        gallery=_gallery(selected, cells),
        problems=sorted({p for cell in cells.values() for p in cell.problems}),
    )

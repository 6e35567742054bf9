"""`python -m jobs.report --run OUTPUT_ROOT`: an HTML report of a segmentation run, from its manifest.

Writes ``<run>/report/index.html`` and ``<run>/report/thumbs/*.png`` (or under ``--output``): the
counts, every failure with its message (grouped by kind), throughput and the decode / infer /
encode time split per run, histograms of the quality signals, and a gallery of the masks most in
need of a human look (lowest confidence, most uncertain pixels, empty, full, worst seams), each
as image | overlay | cut-out. The page needs nothing else to display: no scripts, no external
CSS, histograms inlined as data URIs, thumbnails beside it, so the folder can be copied or
opened offline.

Only the manifest is read whole, as a table; files are opened only for the gallery's entries.
A missing, unreadable or mismatched file shows up by name in its cell and in the "Missing and
unreadable files" list; it never stops the report. Masks are looked up under ``--run`` (where
the manifest is) even if the run was written elsewhere and copied, since ``mask_uri`` ends with
the same ``masks/<relative path>`` key. Image thumbnails of tar members are not extracted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from connectors.manifest import latest_rows, read_manifest
from connectors.storage import (
    LOCAL_SCHEMES,
    S3Options,
    StorageAuthError,
    filesystem,
    join_uri,
    open_input,
    read_bytes,
    write_bytes_atomic,
)
from connectors.thumbnails import Preview, Thumbnail, preview, triptych

__all__ = ["CATEGORIES", "Category", "ReportSummary", "build_report", "main", "summarise"]

log = logging.getLogger("jobs.report")

#: Error messages listed one by one; the rest are only counted (they are all in the manifest).
MAX_LISTED_ERRORS = 200
#: Remote files larger than this are not downloaded for a thumbnail (local ones are read lazily).
MAX_REMOTE_PREVIEW_BYTES = 256 * 1024 * 1024
_FETCH_THREADS = 8
#: Histogram size in inches at 100 dpi: three side by side on the page.
FIGURE_SIZE = (3.8, 2.6)


# --- what goes into the report -----------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    """One gallery section: rows passing ``where``, ordered by ``column``."""

    key: str
    title: str
    why: str
    column: str
    descending: bool
    where: Callable[[pa.Table], pa.ChunkedArray]


def _ok(table: pa.Table) -> pa.ChunkedArray:
    return pc.equal(table["status"], "ok")


def _ok_with(column: str) -> Callable[[pa.Table], pa.ChunkedArray]:
    return lambda table: pc.and_(_ok(table), pc.is_valid(table[column]))


def _ok_flag(column: str) -> Callable[[pa.Table], pa.ChunkedArray]:
    return lambda table: pc.and_(_ok(table), pc.fill_null(table[column], False))


CATEGORIES: tuple[Category, ...] = (
    Category(
        "lowest-confidence",
        "Lowest mean confidence",
        "Masks the model hesitated on most (mean |2p - 1| closest to 0).",
        "mean_confidence",
        False,
        _ok_with("mean_confidence"),
    ),
    Category(
        "most-uncertain",
        "Most uncertain pixels",
        "Largest share of pixels with 0.1 < p < 0.9; soft hair and fur edges are normal, large areas are not.",
        "uncertain_fraction",
        True,
        _ok_with("uncertain_fraction"),
    ),
    Category(
        "empty",
        "Empty masks",
        "Under 0.1% foreground: nothing found, a miss, or a blank input.",
        "foreground_fraction",
        False,
        _ok_flag("is_empty"),
    ),
    Category(
        "full",
        "Full masks",
        "Over 99.9% foreground: usually the background was taken for the object.",
        "foreground_fraction",
        True,
        _ok_flag("is_full"),
    ),
    Category(
        "seams",
        "Highest seam disagreement",
        "Tiled scenes whose overlapping tiles disagreed most: look for visible seams.",
        "seam_disagreement",
        True,
        _ok_with("seam_disagreement"),
    ),
)


@dataclass(frozen=True)
class RunStats:
    """Throughput of one run: rows between its first and last manifest timestamps."""

    run_id: str
    rows: int
    ok: int
    errors: int
    first: datetime | None
    last: datetime | None
    decode_seconds: float
    infer_seconds: float
    encode_seconds: float

    @property
    def span_seconds(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return (self.last - self.first).total_seconds()

    @property
    def rows_per_second(self) -> float | None:
        span = self.span_seconds
        return self.rows / span if span else None


@dataclass(frozen=True)
class ErrorGroup:
    """Error rows whose messages differ only in the input's name and numbers."""

    pattern: str
    count: int
    messages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportSummary:
    inputs: int
    ok: int
    errors: int
    empty: int
    full: int
    tiled: int
    runs: list[RunStats]
    error_groups: list[ErrorGroup]
    errors_listed: int
    settings: dict[str, Counter[str]]


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def _error_pattern(message: str, source_uri: str) -> str:
    """What makes two failures the same kind: the message without the input's name and numbers."""
    pattern = message.replace(source_uri, "<input>") if source_uri else message
    return re.sub(r"\d+(\.\d+)?", "N", pattern)


def group_errors(table: pa.Table, limit: int = MAX_LISTED_ERRORS) -> tuple[list[ErrorGroup], int]:
    """Error rows grouped by kind (largest group first); at most ``limit`` messages listed in all.

    Returns the groups and how many messages they list. A message that does not name its input
    gets the source URI prepended, so every listed line says which file failed.
    """
    errors = table.filter(pc.equal(table["status"], "error")).sort_by(
        [("relative_path", "ascending"), ("source_uri", "ascending")]
    )
    counts: Counter[str] = Counter()
    order: dict[str, list[str]] = {}
    for uri, message in zip(errors["source_uri"].to_pylist(), errors["error"].to_pylist(), strict=True):
        text = message or "(no message recorded)"
        if uri and uri not in text:
            text = f"{uri}: {text}"
        pattern = _error_pattern(text, uri or "")
        counts[pattern] += 1
        order.setdefault(pattern, []).append(text)
    groups, listed = [], 0
    for pattern, count in counts.most_common():
        shown = order[pattern][: max(0, limit - listed)]
        listed += len(shown)
        groups.append(ErrorGroup(pattern, count, shown))
    return groups, listed


def _seconds_sum(table: pa.Table, column: str) -> float:
    return float(pc.sum(table[column]).as_py() or 0.0)


def _run_stats(table: pa.Table) -> list[RunStats]:
    stats = []
    for run_id in sorted(set(table["run_id"].to_pylist())):
        rows = table.filter(pc.equal(table["run_id"], run_id))
        times = pc.min_max(rows["processed_at"])
        ok = _count(_ok(rows))
        stats.append(
            RunStats(
                run_id=run_id,
                rows=rows.num_rows,
                ok=ok,
                errors=rows.num_rows - ok,
                first=times["min"].as_py(),
                last=times["max"].as_py(),
                decode_seconds=_seconds_sum(rows, "decode_seconds"),
                infer_seconds=_seconds_sum(rows, "infer_seconds"),
                encode_seconds=_seconds_sum(rows, "encode_seconds"),
            )
        )
    return stats


def summarise(table: pa.Table) -> ReportSummary:
    """Counts, per-run throughput, grouped errors and the model settings of ``table``'s rows."""
    ok = _ok(table)
    groups, listed = group_errors(table)
    settings: dict[str, Counter[str]] = {}
    ok_rows = table.filter(ok)
    for column in ("variant", "weights", "resolution", "dtype"):
        counts = pc.value_counts(ok_rows[column].drop_null()).to_pylist()
        settings[column] = Counter({str(c["values"]): int(c["counts"]) for c in counts})
    return ReportSummary(
        inputs=table.num_rows,
        ok=_count(ok),
        errors=_count(pc.equal(table["status"], "error")),
        empty=_count(_ok_flag("is_empty")(table)),
        full=_count(_ok_flag("is_full")(table)),
        tiled=_count(pc.and_(ok, pc.greater(pc.fill_null(table["tile_count"], 1), 1))),
        runs=_run_stats(table),
        error_groups=groups,
        errors_listed=listed,
        settings=settings,
    )


def select_gallery(table: pa.Table, size: int) -> list[tuple[Category, list[dict[str, Any]], int]]:
    """Per category: its first ``size`` rows (ties broken by relative path) and how many qualify."""
    selected = []
    for category in CATEGORIES:
        rows = table.filter(category.where(table))
        order = "descending" if category.descending else "ascending"
        rows = rows.sort_by([(category.column, order), ("relative_path", "ascending")])
        selected.append((category, rows.slice(0, size).to_pylist(), rows.num_rows))
    return selected


# --- histograms ----------------------------------------------------------------------------------


def _values(table: pa.Table, column: str) -> np.ndarray:
    array = table[column].drop_null().to_numpy()
    return np.asarray(array, dtype=np.float64)


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _axes(title: str, xlabel: str) -> tuple[Figure, Any]:
    figure = Figure(figsize=FIGURE_SIZE, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=9.5)
    axes.set_xlabel(xlabel, fontsize=8.5)
    axes.set_ylabel("inputs", fontsize=8.5)
    axes.tick_params(labelsize=7.5)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure, axes


def _histogram(title: str, values: np.ndarray, xlabel: str, value_range: tuple[float, float] | None) -> bytes:
    if value_range is None:  # non-negative signals without a fixed top
        value_range = (0.0, max(float(values.max()), 1e-3) * 1.05)
    figure, axes = _axes(f"{title}  (n={values.size}, median {np.median(values):.3g})", xlabel)
    axes.hist(values, bins=40, range=value_range, color="#3b6ea8", edgecolor="white", linewidth=0.4)
    return _figure_png(figure)


def _timing_histogram(table: pa.Table) -> bytes | None:
    series = {}
    for label in ("decode", "infer", "encode"):
        values = _values(table, f"{label}_seconds")
        if (values := values[values > 0]).size:  # log axis
            series[label] = values
    if not series:
        return None
    low = min(float(v.min()) for v in series.values())
    high = max(float(v.max()) for v in series.values())
    bins = np.geomspace(low, high * 1.0001, 40) if high > low else 10
    figure, axes = _axes("Seconds per input by stage", "seconds")
    for (label, values), colour in zip(series.items(), ("#3b6ea8", "#d1495b", "#66a182"), strict=False):
        axes.hist(
            values, bins=bins, alpha=0.6, color=colour, label=f"{label} (median {np.median(values):.3g} s)"
        )
    if high > low:
        axes.set_xscale("log")
    axes.legend(fontsize=7.5)
    return _figure_png(figure)


def histograms(table: pa.Table) -> list[tuple[str, bytes]]:
    """(caption, PNG) for each quality signal present in ``table``'s ok rows, then the timings."""
    ok = table.filter(_ok(table))
    figures = []
    for column, title, value_range in (
        ("mean_confidence", "Mean confidence", (0.0, 1.0)),
        ("uncertain_fraction", "Uncertain fraction", (0.0, 1.0)),
        ("foreground_fraction", "Foreground fraction", (0.0, 1.0)),
        ("seam_disagreement", "Seam disagreement", None),
    ):
        values = _values(ok, column)
        if values.size:
            figures.append((f"Histogram of {column}", _histogram(title, values, column, value_range)))
    timing = _timing_histogram(table)
    if timing is not None:
        figures.append(("Histogram of seconds per input by stage", timing))
    return figures


# --- gallery files ---------------------------------------------------------------------------------


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


# --- HTML ------------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2329;
       background: #f5f6f8; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 34px 0 10px; border-bottom: 2px solid #d9dde3;
     padding-bottom: 4px; } h3 { font-size: 16px; margin: 22px 0 6px; }
nav a { margin-right: 14px; } a { color: #2a5d9f; }
.meta { color: #5b6470; margin: 0 0 8px; } .muted { color: #6b7480; }
.warning { background: #fff3cd; border: 1px solid #e0c36a; padding: 8px 12px; border-radius: 6px; margin: 12px 0; }
.stats { display: flex; flex-wrap: wrap; gap: 12px; }
.stat { background: #fff; border: 1px solid #d9dde3; border-radius: 8px; padding: 10px 16px; min-width: 110px; }
.stat .n { display: block; font-size: 26px; font-weight: 600; } .stat.bad .n { color: #b3261e; }
.stat.good .n { color: #23734a; }
table { border-collapse: collapse; background: #fff; margin: 6px 0; }
th, td { border: 1px solid #d9dde3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef0f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: flex; height: 18px; width: 420px; border-radius: 4px; overflow: hidden; border: 1px solid #c9ced6; }
.bar span { display: block; height: 100%; }
.decode { background: #3b6ea8; } .infer { background: #d1495b; } .encode { background: #66a182; }
.key { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; }
.errors li { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; overflow-wrap: anywhere; }
.pattern { font-family: ui-monospace, Menlo, Consolas, monospace; background: #fff; padding: 2px 6px;
           border: 1px solid #e3e6ea; border-radius: 4px; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figures img { background: #fff; border: 1px solid #d9dde3; border-radius: 6px; }
.entry { background: #fff; border: 1px solid #d9dde3; border-radius: 8px; padding: 10px 12px; margin: 10px 0; }
.entry .path { font-weight: 600; overflow-wrap: anywhere; } .entry .signals { color: #4a525c; font-size: 13px; }
.cells { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 8px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #5b6470; max-width: 256px; overflow-wrap: anywhere; }
.cells img { display: block; max-width: 256px; max-height: 256px; border: 1px solid #e3e6ea; }
.placeholder { width: 200px; min-height: 120px; display: flex; align-items: center; justify-content: center;
               text-align: center; font-size: 12px; color: #8a2d24; background: #fbeeed; border: 1px dashed #d9a39d;
               padding: 8px; overflow-wrap: anywhere; box-sizing: border-box; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _stat(key: str, value: int, label: str, tone: str = "") -> str:
    return f'<div class="stat {tone}" id="count-{key}"><span class="n">{value}</span>{_e(label)}</div>'


def _counts_html(summary: ReportSummary) -> str:
    tiles = [
        _stat("inputs", summary.inputs, "inputs"),
        _stat("ok", summary.ok, f"ok ({_percent(summary.ok, summary.inputs)})", "good"),
        _stat("error", summary.errors, f"errors ({_percent(summary.errors, summary.inputs)})",
              "bad" if summary.errors else ""),
        _stat("empty", summary.empty, "empty masks", "bad" if summary.empty else ""),
        _stat("full", summary.full, "full masks", "bad" if summary.full else ""),
    ]  # fmt: skip
    if summary.tiled:
        tiles.append(_stat("tiled", summary.tiled, "tiled scenes"))
    settings = "".join(
        f"<tr><th>{_e(column)}</th><td>{', '.join(f'{_e(v)} ({n})' for v, n in values.most_common())}</td></tr>"
        for column, values in summary.settings.items()
        if values
    )
    table = f"<h3>Model settings of the ok rows</h3><table>{settings}</table>" if settings else ""
    return f'<div class="stats">{"".join(tiles)}</div>{table}'


def _timing_html(runs: list[RunStats]) -> str:
    header = (
        "<tr><th>run</th><th>rows</th><th>ok</th><th>errors</th><th>first row</th><th>last row</th>"
        "<th>span</th><th>rows/s</th><th>decode</th><th>infer</th><th>encode</th></tr>"
    )
    lines = []
    for run in runs:
        rate = f"{run.rows_per_second:.2f}" if run.rows_per_second else "n/a"
        first = run.first.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if run.first else "n/a"
        last = run.last.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if run.last else "n/a"
        lines.append(
            f"<tr><td>{_e(run.run_id)}</td><td class=num>{run.rows}</td><td class=num>{run.ok}</td>"
            f"<td class=num>{run.errors}</td><td>{first}</td><td>{last}</td>"
            f"<td class=num>{_duration(run.span_seconds)}</td><td class=num>{rate}</td>"
            f"<td class=num>{_duration(run.decode_seconds)}</td><td class=num>{_duration(run.infer_seconds)}</td>"
            f"<td class=num>{_duration(run.encode_seconds)}</td></tr>"
        )
    decode = sum(r.decode_seconds for r in runs)
    infer = sum(r.infer_seconds for r in runs)
    encode = sum(r.encode_seconds for r in runs)
    total = decode + infer + encode
    split = ""
    if total > 0:
        parts = (("decode", decode), ("infer", infer), ("encode", encode))
        bar = "".join(f'<span class="{k}" style="width:{100 * v / total:.2f}%"></span>' for k, v in parts)
        legend = "".join(
            f'<span class="key {k}"></span>{k} {_duration(v)} ({100 * v / total:.1f}%)' for k, v in parts
        )
        split = (
            f'<h3>Where the time went</h3><div class="bar">{bar}</div><p>{legend}</p>'
            '<p class="muted">Sums of per-input seconds over all workers (decode and encode on CPU workers, '
            "infer is each input's share of its batch's forward pass), so they can exceed the wall-clock span.</p>"
        )
    note = (
        '<p class="muted">Span: first to last manifest timestamp of the run; rows/s = rows / span '
        "(the first batch's own time is not included).</p>"
    )
    return f"<table>{header}{''.join(lines)}</table>{note}{split}"


def _errors_html(summary: ReportSummary) -> str:
    if not summary.error_groups:
        return "<p>No errors.</p>"
    parts = []
    for group in summary.error_groups:
        items = "".join(f"<li>{_e(message)}</li>" for message in group.messages)
        more = group.count - len(group.messages)
        tail = f'<li class="muted">... and {more} more (see the manifest)</li>' if more else ""
        parts.append(
            f'<h3>{group.count} &times; <span class="pattern">{_e(group.pattern)}</span></h3>'
            f'<ul class="errors">{items}{tail}</ul>'
        )
    unlisted = summary.errors - summary.errors_listed
    footer = (
        f'<p class="muted">{summary.errors_listed} of {summary.errors} messages listed; '
        f"{unlisted} more are in the manifest (status = error).</p>"
        if unlisted
        else ""
    )
    return "".join(parts) + footer


def _figures_html(figures: list[tuple[str, bytes]]) -> str:
    if not figures:
        return "<p>No quality signals recorded (no ok rows).</p>"
    width, height = (round(side * 100) for side in FIGURE_SIZE)
    images = "".join(
        f'<img alt="{_e(caption)}" title="{_e(caption)}" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        for caption, png in figures
    )
    return f'<div class="figures">{images}</div>'


def _signals_line(row: dict[str, Any]) -> str:
    parts = []
    for column, label, fmt in (
        ("mean_confidence", "confidence", "{:.3f}"),
        ("uncertain_fraction", "uncertain", "{:.1%}"),
        ("foreground_fraction", "foreground", "{:.1%}"),
        ("seam_disagreement", "seam", "{:.4f}"),
    ):
        if row.get(column) is not None:
            parts.append(f"{label} {fmt.format(row[column])}")
    if row.get("width") and row.get("height"):
        parts.append(f"{row['width']}x{row['height']} px")
    if (row.get("tile_count") or 1) > 1:
        parts.append(f"{row['tile_count']} tiles")
    parts.append(f"run {row['run_id']}")
    return " &middot; ".join(_e(p) for p in parts)


def _cell_html(path: str | None, caption: str, note: str | None, alt: str) -> str:
    if path is None:
        body = f'<div class="placeholder">{_e(note or "not available")}</div>'
        return f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>"
    extra = f"<br>{_e(note)}" if note else ""
    return (
        f'<figure><img src="{_e(path)}" alt="{_e(alt)}" loading="lazy">'
        f"<figcaption>{_e(caption)}{extra}</figcaption></figure>"
    )


def _entry_html(row: dict[str, Any], cells: GalleryCells) -> str:
    name = row.get("relative_path") or row["source_uri"]
    figures = "".join(
        _cell_html(path, caption, cells.notes.get(kind), f"{caption} of {name}")
        for kind, caption, path in (
            ("image", "image", cells.image),
            ("overlay", "mask overlay", cells.overlay),
            ("cutout", "cut-out", cells.cutout),
        )
    )
    return (
        f'<div class="entry"><div class="path">{_e(name)}</div>'
        f'<div class="signals">{_signals_line(row)}</div><div class="cells">{figures}</div></div>'
    )


def _gallery_html(
    selected: list[tuple[Category, list[dict[str, Any]], int]], cells: dict[str, GalleryCells]
) -> str:
    parts = []
    for category, rows, total in selected:
        if category.key == "seams" and total == 0:
            continue  # no tiled scenes in this run: nothing to say
        shown = f"{len(rows)} of {total}" if total > len(rows) else f"{total}"
        entries = "".join(_entry_html(row, cells[row["id"]]) for row in rows)
        if not entries:
            entries = "<p>None.</p>" if total == 0 else '<p class="muted">Not shown (--gallery-size 0).</p>'

        parts.append(
            f'<h3 id="gallery-{category.key}">{_e(category.title)} <span class="muted">({shown})</span></h3>'
            f'<p class="muted">{_e(category.why)}</p>{entries}'
        )
    return "".join(parts)


def _problems_html(cells: dict[str, GalleryCells]) -> str:
    problems = sorted({p for cell in cells.values() for p in cell.problems})
    if not problems:
        return "<p>Every file shown in the gallery was found and read.</p>"
    items = "".join(f"<li>{_e(p)}</li>" for p in problems)
    return f'<ul class="errors" id="problem-list">{items}</ul>'


def render_html(
    run_root: str,
    run_ids: Sequence[str],
    summary: ReportSummary,
    figures: list[tuple[str, bytes]],
    selected: list[tuple[Category, list[dict[str, Any]], int]],
    cells: dict[str, GalleryCells],
) -> str:
    """The whole page as one string; everything from the manifest is HTML-escaped."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    runs = ", ".join(run_ids) if len(run_ids) <= 5 else f"{len(run_ids)} runs"
    warning = ""
    if "random" in summary.settings.get("weights", {}):
        warning = (
            '<div class="warning">Some masks were made with <b>random weights</b> (a smoke test): '
            "their quality signals mean nothing.</div>"
        )
    sections = [
        ("counts", "Counts", _counts_html(summary)),
        ("throughput", "Throughput and timing", _timing_html(summary.runs)),
        ("errors", f"Errors ({summary.errors})", _errors_html(summary)),
        ("signals", "Quality signals", _figures_html(figures)),
        ("gallery", "Masks to look at", _gallery_html(selected, cells)),
        ("files", "Missing and unreadable files", _problems_html(cells)),
    ]
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{_e(title)}</h2>{content}</section>' for key, title, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Segmentation report: {_e(run_root)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Segmentation report</h1>"
        f'<p class="meta">Run folder <b>{_e(run_root)}</b> &middot; runs {_e(runs)} &middot; '
        f"generated {generated}. One row per input: the newest manifest row of each id.</p>"
        f"{warning}<nav>{nav}</nav>{body}</main></body></html>\n"
    )


# --- the command ----------------------------------------------------------------------------------


def load_rows(run_root: str, s3: S3Options | None = None, run_id: str | None = None) -> pa.Table:
    """Newest manifest row per input, of one run (``run_id``) or of all runs.

    Raises FileNotFoundError for a folder without a manifest and ValueError for an unknown run id.
    """
    table = read_manifest(run_root, s3)
    if table.num_rows == 0:
        raise FileNotFoundError(f"no manifest rows under {join_uri(run_root, 'manifest')}")
    if run_id is not None:
        known = sorted(set(table["run_id"].to_pylist()))
        if run_id not in known:
            listed = ", ".join(known[-20:])
            raise ValueError(
                f"run id {run_id!r} is not in the manifest of {run_root}; known run ids: {listed}"
            )
        table = table.filter(pc.equal(table["run_id"], run_id))
    return latest_rows(table)


def build_report(
    run_root: str,
    output: str | None = None,
    s3: S3Options | None = None,
    gallery_size: int = 12,
    run_id: str | None = None,
    thumbnail_size: int = 256,
) -> tuple[str, ReportSummary]:
    """Write the report of ``run_root`` and return the URI of its ``index.html`` and the summary."""
    report_root = output or join_uri(run_root, "report")
    table = load_rows(run_root, s3, run_id)
    summary = summarise(table)
    figures = histograms(table)
    selected = select_gallery(table, gallery_size)
    cells = build_gallery(
        [row for _, rows, _ in selected for row in rows], run_root, report_root, s3, thumbnail_size
    )
    page = render_html(run_root, sorted(set(table["run_id"].to_pylist())), summary, figures, selected, cells)
    index = join_uri(report_root, "index.html")
    write_bytes_atomic(index, page.encode("utf-8"), s3)
    log.info("wrote %s (%d inputs, %d gallery entries)", index, summary.inputs, len(cells))
    return index, summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.report", description="HTML report of a segmentation run, from its manifest."
    )
    parser.add_argument(
        "--run", required=True, help="The run's output root (local folder or s3://bucket/prefix)."
    )
    parser.add_argument("--output", help="Where to write index.html and thumbs/; default: <run>/report.")
    parser.add_argument("--gallery-size", type=int, default=12, help="Entries per gallery category.")
    parser.add_argument("--run-id", help="Report on one run only; default: the newest row of every input.")
    parser.add_argument("--thumbnail-size", type=int, default=256, help="Longest side of thumbnails (px).")
    parser.add_argument("--s3-endpoint-url", help="S3-compatible endpoint; credentials from the AWS chain.")
    parser.add_argument("--s3-region", help="S3 region for request signing.")
    args = parser.parse_args(argv)
    if args.gallery_size < 0:
        parser.error("--gallery-size must be >= 0")
    if not 16 <= args.thumbnail_size <= 2048:
        parser.error("--thumbnail-size must be between 16 and 2048")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    s3 = S3Options(endpoint_url=args.s3_endpoint_url, region=args.s3_region)
    try:
        index, summary = build_report(
            args.run, args.output, s3, args.gallery_size, args.run_id, args.thumbnail_size
        )
    except (FileNotFoundError, StorageAuthError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary.inputs} inputs: {summary.ok} ok, {summary.errors} errors")
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Writing a report: rows -> numbers, figures, gallery thumbnails -> ``index.html``."""

from __future__ import annotations

import logging

from connectors.storage import S3Options, join_uri, write_bytes_atomic

from .categories import select_gallery
from .figures import histograms
from .gallery import build_gallery
from .page import render_html
from .rows import load_rows
from .statistics import ReportSummary, summarise

log = logging.getLogger("jobs.report")


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

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

from .build import build_report
from .categories import CATEGORIES, Category, select_gallery
from .cli import COMMAND, ReportConfig, main, report
from .figures import FIGURE_SIZE, histograms
from .gallery import MAX_REMOTE_PREVIEW_BYTES, GalleryCells, build_gallery, load_preview, mask_location
from .page import render_html
from .rows import load_rows
from .statistics import MAX_LISTED_ERRORS, ErrorGroup, ReportSummary, RunStats, group_errors, summarise

__all__ = [
    "CATEGORIES",
    "COMMAND",
    "FIGURE_SIZE",
    "MAX_LISTED_ERRORS",
    "MAX_REMOTE_PREVIEW_BYTES",
    "Category",
    "ErrorGroup",
    "GalleryCells",
    "ReportConfig",
    "ReportSummary",
    "RunStats",
    "build_gallery",
    "build_report",
    "group_errors",
    "histograms",
    "load_preview",
    "load_rows",
    "main",
    "mask_location",
    "render_html",
    "report",
    "select_gallery",
    "summarise",
]

"""Histograms of the quality signals and stage timings, as PNG bytes to inline in the page."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .rows import is_ok

#: Histogram size in inches at 100 dpi: three side by side on the page.
FIGURE_SIZE = (3.8, 2.6)


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
    ok = table.filter(is_ok(table))
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

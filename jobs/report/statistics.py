"""The numbers of a report: counts, per-run throughput, failures grouped by kind, model settings."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from .rows import count, is_ok, ok_flag

#: Error messages listed one by one; the rest are only counted (they are all in the manifest).
MAX_LISTED_ERRORS = 200
#: The manifest column naming the weights; ``random`` there marks a smoke test.
WEIGHTS_COLUMN = "weights_sha256"
#: Model settings summarised over the ok rows, in page order.
SETTINGS_COLUMNS = ("variant", WEIGHTS_COLUMN, "resolution", "dtype")


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
    """What the counts, timing, errors and settings sections of the page show."""

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
    for pattern, n in counts.most_common():
        shown = order[pattern][: max(0, limit - listed)]
        listed += len(shown)
        groups.append(ErrorGroup(pattern, n, shown))
    return groups, listed


def _seconds_sum(table: pa.Table, column: str) -> float:
    return float(pc.sum(table[column]).as_py() or 0.0)


def run_stats(table: pa.Table) -> list[RunStats]:
    """Throughput and time split of each run in ``table``, by run id."""
    stats = []
    for run_id in sorted(set(table["run_id"].to_pylist())):
        rows = table.filter(pc.equal(table["run_id"], run_id))
        times = pc.min_max(rows["processed_at"])
        ok = count(is_ok(rows))
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
    ok = is_ok(table)
    groups, listed = group_errors(table)
    settings: dict[str, Counter[str]] = {}
    ok_rows = table.filter(ok)
    for column in SETTINGS_COLUMNS:
        counts = pc.value_counts(ok_rows[column].drop_null()).to_pylist()
        settings[column] = Counter({str(c["values"]): int(c["counts"]) for c in counts})
    return ReportSummary(
        inputs=table.num_rows,
        ok=count(ok),
        errors=count(pc.equal(table["status"], "error")),
        empty=count(ok_flag("is_empty")(table)),
        full=count(ok_flag("is_full")(table)),
        tiled=count(pc.and_(ok, pc.greater(pc.fill_null(table["tile_count"], 1), 1))),
        runs=run_stats(table),
        error_groups=groups,
        errors_listed=listed,
        settings=settings,
    )

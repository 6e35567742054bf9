"""The written evaluation: per_image.parquet, metrics.json and metrics.md, and the problem lists."""

from __future__ import annotations

import io
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from birefnet_core.metrics import DATASET_METRICS, F_BETA2
from connectors.storage import join_uri, write_bytes_atomic

from .aggregation import EvaluationReport
from .config import EvaluateConfig
from .scoring import PairScore

#: How many unpaired / missing / failed names are printed before "... and N more".
SHOW_NAMES = 20
REPORT_FILES = ("per_image.parquet", "metrics.json", "metrics.md")
_COLUMN_TITLES = {
    "S": "S-measure",
    "maxF": "maxF",
    "meanF": "meanF",
    "wF": "wF",
    "MAE": "MAE",
    "maxE": "maxE",
    "meanE": "meanE",
    "adpF": "adpF",
    "adpE": "adpE",
    "HCE": "HCE",
}


def per_image_table(results: list[PairScore]) -> pa.Table:
    """One row per pair: identity, sizes, per-image metrics (null for failed pairs) and error."""
    metrics = [r.scores.metrics() if r.scores is not None else {} for r in results]

    def size(index: int, which: str) -> list[int | None]:
        sizes = [getattr(r, which) for r in results]
        return [s[index] if s is not None else None for s in sizes]

    columns: dict[str, pa.Array] = {
        "key": pa.array([r.pair.key for r in results], pa.string()),
        "dataset": pa.array([r.pair.dataset for r in results], pa.string()),
        "pred_uri": pa.array([r.pair.pred_uri for r in results], pa.string()),
        "gt_uri": pa.array([r.pair.gt_uri for r in results], pa.string()),
        "pred_height": pa.array(size(0, "pred_size"), pa.int32()),
        "pred_width": pa.array(size(1, "pred_size"), pa.int32()),
        "gt_height": pa.array(size(0, "gt_size"), pa.int32()),
        "gt_width": pa.array(size(1, "gt_size"), pa.int32()),
        "resized": pa.array(
            [r.pred_size != r.gt_size if r.scores is not None else None for r in results], pa.bool_()
        ),
    }
    for name in DATASET_METRICS:
        columns[name] = pa.array([m.get(name) for m in metrics], pa.float64())
    columns["error"] = pa.array([r.error for r in results], pa.string())
    return pa.table(columns)


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if name == "HCE" else f"{value:.3f}"


def markdown_table(datasets: dict[str, dict[str, float]]) -> str:
    """The paper's layout: one row per dataset, 3 decimals (HCE, a count of edits, as an integer)."""
    names = [m for m in DATASET_METRICS if any(m in row for row in datasets.values())]
    lines = [
        "| Dataset | Images | " + " | ".join(_COLUMN_TITLES[m] for m in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for dataset, row in datasets.items():
        cells = [_format(m, row.get(m)) for m in names]
        lines.append(f"| {dataset} | {int(row['images'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _names_block(title: str, names: list[str]) -> list[str]:
    if not names:
        return []
    lines = [f"{title} ({len(names)}):"]
    lines += [f"  {name}" for name in names[:SHOW_NAMES]]
    if len(names) > SHOW_NAMES:
        lines.append(f"  ... and {len(names) - SHOW_NAMES} more (see metrics.json)")
    return lines


def problem_lines(report: EvaluationReport) -> list[str]:
    """Unpaired, missing, duplicate and unreadable files, as printed and put into metrics.md."""
    p = report.pairing
    return (
        _names_block("ground truth without a prediction", p.missing_pred)
        + _names_block("predictions without ground truth", p.unpaired_pred)
        + _names_block("ignored duplicates (same name, other extension)", p.duplicates)
        + _names_block("pairs that could not be read", [f"{r.pair.key}: {r.error}" for r in report.failed])
    )


def _pysodmetrics_version() -> str:
    try:
        return version("pysodmetrics")
    except PackageNotFoundError:  # pragma: no cover - depends on the environment
        return "unknown"


def _markdown(report: EvaluationReport, config: EvaluateConfig) -> str:
    lines = [
        "# Evaluation",
        "",
        f"Predictions: `{config.predictions}`{' (segmentation run)' if config.run else ''}  ",
        f"Ground truth: `{config.gt}`",
        "",
        markdown_table(report.datasets),
        f"Computed with pysodmetrics {_pysodmetrics_version()}: F-measure with beta^2 = {F_BETA2}, "
        "max/mean over 256 thresholds of the dataset's mean curve, adp at twice the mean prediction; "
        "predictions resized to the ground truth's size (bilinear). Lower is better for MAE and HCE, "
        "higher for the rest.",
    ]
    problems = problem_lines(report)
    if problems:
        lines += ["", "```", *problems, "```"]
    return "\n".join(lines) + "\n"


def _metrics_json(report: EvaluationReport, config: EvaluateConfig) -> dict[str, Any]:
    p = report.pairing
    return {
        "metrics": list(DATASET_METRICS),
        "datasets": {name: row for name, row in report.datasets.items()},
        "pairs": len(p.pairs),
        "scored": report.scored,
        "failed": [
            {"key": r.pair.key, "pred_uri": r.pair.pred_uri, "gt_uri": r.pair.gt_uri, "error": r.error}
            for r in report.failed
        ],
        "missing_pred": p.missing_pred,
        "unpaired_pred": p.unpaired_pred,
        "duplicates": p.duplicates,
        "settings": {
            "pysodmetrics": _pysodmetrics_version(),
            "f_beta2": F_BETA2,
            "resize": "cv2.resize(pred, (gt_width, gt_height)), INTER_LINEAR, when sizes differ",
            "execution": report.mode,
        },
        "config": config.model_dump(mode="json"),
    }


def write_report(report: EvaluationReport, config: EvaluateConfig) -> None:
    """Write the REPORT_FILES under ``config.output``."""
    s3 = config.s3
    buffer = io.BytesIO()
    pq.write_table(per_image_table(report.results), buffer, compression="zstd")
    write_bytes_atomic(join_uri(config.output, "per_image.parquet"), buffer.getvalue(), s3)
    text = json.dumps(_metrics_json(report, config), indent=2) + "\n"
    write_bytes_atomic(join_uri(config.output, "metrics.json"), text.encode(), s3)
    write_bytes_atomic(join_uri(config.output, "metrics.md"), _markdown(report, config).encode(), s3)

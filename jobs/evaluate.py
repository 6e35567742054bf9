"""`python -m jobs.evaluate`: score predicted masks against ground truth, per image and per dataset.

pair files by key (connectors.pairs) -> read both masks, resize the prediction to the ground truth's
size, score the pair with pysodmetrics (birefnet_core.metrics), locally or as a Ray Data map ->
accumulate every dataset on the driver in pair order -> per_image.parquet, metrics.json, metrics.md.

Per-image scores are computed wherever is fastest, but the dataset numbers are always accumulated
on the driver in the pairs' sorted order, so local and Ray runs give bit-identical results, equal
to feeding the library the same arrays directly.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from birefnet_core.metrics import DATASET_METRICS, F_BETA2, ImageScores, SODEvaluator, resize_to
from connectors.pairs import MaskPair, PairingResult, pair_masks, pairs_from_manifest, read_mask
from connectors.storage import S3Options, StorageAuthError, join_uri, write_bytes_atomic

from .config import ConfigError, describe_validation_error

__all__ = [
    "RAY_MIN_PAIRS",
    "EvaluateConfig",
    "EvaluationReport",
    "PairScore",
    "aggregate",
    "main",
    "markdown_table",
    "parse_args",
    "per_image_table",
    "run",
    "score_pair",
    "score_pairs_local",
    "score_pairs_ray",
]

log = logging.getLogger("jobs.evaluate")

#: ``--parallel auto`` runs on Ray Data from this many pairs on; fewer are scored in a plain loop,
#: where starting Ray (and importing torch in every worker) would cost more than it saves.
RAY_MIN_PAIRS = 100
#: Pairs per Ray Data block and batch: small, because one pair takes up to seconds (wF, HCE).
RAY_PAIRS_PER_BLOCK = 4
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


class EvaluateConfig(BaseModel):
    """Everything an evaluation needs; written into metrics.json."""

    model_config = ConfigDict(extra="forbid")

    pred: str | None = Field(None, description="Folder or URI of predicted masks (paired by relative path).")
    run: str | None = Field(
        None,
        description="Output root of a segmentation run: its manifest names the masks (instead of --pred).",
    )
    gt: str = Field(..., description="Folder or URI of ground-truth masks (DIS5K-style gt/ folders allowed).")
    output: str = Field(
        "evaluation",
        description="Where the report goes (default ./evaluation, never inside the predictions).",
    )
    dataset_name: str | None = Field(
        None, description="Name of the dataset not inside a <name>/gt/ folder; default: the gt folder's name."
    )
    parallel: Literal["auto", "local", "ray"] = Field(
        "auto", description=f"auto: Ray Data from {RAY_MIN_PAIRS} pairs on, else a local loop."
    )
    workers: int | None = Field(
        None, ge=1, description="Concurrent Ray tasks (and CPUs of an embedded Ray); default: all CPUs."
    )
    hce: bool = Field(True, description="Compute the human correction effort (slowest measure).")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint; credentials come from the standard AWS chain."
    )
    s3_region: str | None = Field(None, description="S3 region for request signing.")
    ray_address: str | None = Field(
        None, description="Ray cluster address; default: RAY_ADDRESS, else an embedded local Ray."
    )

    @model_validator(mode="after")
    def _one_prediction_source(self) -> EvaluateConfig:
        if (self.pred is None) == (self.run is None):
            raise ValueError(
                "give exactly one of --pred (a folder of masks) and --run (a segmentation output)"
            )
        return self

    @property
    def s3(self) -> S3Options:
        return S3Options(endpoint_url=self.s3_endpoint_url, region=self.s3_region)

    @property
    def predictions(self) -> str:
        return self.pred if self.pred is not None else str(self.run)


@dataclass(frozen=True)
class PairScore:
    """One pair's outcome: sizes as read, and its scores, or the error that stopped it."""

    pair: MaskPair
    pred_size: tuple[int, int] | None = None  # (height, width) before resizing
    gt_size: tuple[int, int] | None = None
    scores: ImageScores | None = None
    error: str | None = None


@dataclass(frozen=True)
class EvaluationReport:
    datasets: dict[str, dict[str, float]]  # name -> images + DATASET_METRICS
    pairing: PairingResult
    results: list[PairScore]
    mode: str
    output: str

    @property
    def failed(self) -> list[PairScore]:
        return [r for r in self.results if r.error is not None]

    @property
    def scored(self) -> int:
        return len(self.results) - len(self.failed)


def score_pair(pair: MaskPair, s3: S3Options | None = None, hce: bool = True) -> PairScore:
    """Read both masks, resize the prediction to the ground truth's size, score it.

    An unreadable or missing file becomes ``PairScore.error`` naming it; rejected credentials
    raise, since every other pair would fail the same way.
    """
    try:
        pred = read_mask(pair.pred_uri, s3)
        gt = read_mask(pair.gt_uri, s3)
        scores = SODEvaluator(hce=hce).step(resize_to(pred, gt.shape), gt)
    except StorageAuthError:
        raise
    except (OSError, ValueError) as exc:  # ImageDecodeError is a ValueError
        return PairScore(pair, error=str(exc))
    return PairScore(pair, (pred.shape[0], pred.shape[1]), (gt.shape[0], gt.shape[1]), scores)


def score_pairs_local(
    pairs: list[MaskPair], s3: S3Options | None = None, hce: bool = True
) -> list[PairScore]:
    """Score pairs one after the other in this process."""
    return [score_pair(pair, s3, hce) for pair in pairs]


_SCALARS = ("S", "MAE", "wF", "adpF", "adpE", "HCE")


def _score_batch(batch: dict[str, np.ndarray], s3: S3Options | None, hce: bool) -> dict[str, np.ndarray]:
    """Ray Data map: pair URIs in, sizes + scores (NaN-filled on error) out, keyed by pair index."""
    n = len(batch["index"])
    out: dict[str, Any] = {
        "index": np.asarray(batch["index"], np.int64),
        "error": np.array([""] * n, dtype=object),
        "size": np.full((n, 4), -1, np.int64),
        **{name: np.full(n, np.nan) for name in _SCALARS},
        "F_curve": np.full((n, 256), np.nan),
        "E_curve": np.full((n, 256), np.nan),
    }
    for i in range(n):
        pair = MaskPair(str(batch["key"][i]), str(batch["pred_uri"][i]), str(batch["gt_uri"][i]), "")
        result = score_pair(pair, s3, hce)
        if result.scores is None:
            out["error"][i] = result.error
            continue
        out["size"][i] = (*result.pred_size, *result.gt_size)  # type: ignore[misc]
        for name in _SCALARS:
            value = getattr(result.scores, name)
            out[name][i] = np.nan if value is None else value
        out["F_curve"][i] = result.scores.F_curve
        out["E_curve"][i] = result.scores.E_curve
    return out


def score_pairs_ray(
    pairs: list[MaskPair], s3: S3Options | None = None, hce: bool = True, workers: int | None = None
) -> list[PairScore]:
    """Score pairs as a Ray Data map over the running Ray; results come back in ``pairs`` order."""
    import ray

    if not pairs:
        return []
    items = [
        {"index": i, "key": p.key, "pred_uri": p.pred_uri, "gt_uri": p.gt_uri} for i, p in enumerate(pairs)
    ]
    ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / RAY_PAIRS_PER_BLOCK))
    ds = ds.map_batches(
        _score_batch,
        batch_size=RAY_PAIRS_PER_BLOCK,
        batch_format="numpy",
        fn_kwargs={"s3": s3, "hce": hce},
        concurrency=workers,
    )
    results: list[PairScore | None] = [None] * len(pairs)
    for row in ds.iter_rows():
        i = int(row["index"])
        if row["error"]:
            results[i] = PairScore(pairs[i], error=str(row["error"]))
            continue
        ph, pw, gh, gw = (int(v) for v in row["size"])
        scalars = {name: float(row[name]) for name in _SCALARS}
        scores = ImageScores(
            **{**scalars, "HCE": scalars["HCE"] if hce else None},
            F_curve=np.asarray(row["F_curve"], np.float64),
            E_curve=np.asarray(row["E_curve"], np.float64),
        )
        results[i] = PairScore(pairs[i], (ph, pw), (gh, gw), scores)
    lost = [pairs[i].key for i, r in enumerate(results) if r is None]
    if lost:
        raise RuntimeError(f"Ray returned no result for {len(lost)} pairs, e.g. {lost[:3]}")
    return [r for r in results if r is not None]


def aggregate(results: list[PairScore], hce: bool = True) -> dict[str, dict[str, float]]:
    """Dataset numbers: each dataset's scored pairs added to one SODEvaluator in list order."""
    evaluators: dict[str, SODEvaluator] = {}
    for result in results:
        if result.scores is not None:
            evaluators.setdefault(result.pair.dataset, SODEvaluator(hce=hce)).add(result.scores)
    return {
        name: {"images": evaluator.count, **evaluator.results()}
        for name, evaluator in sorted(evaluators.items())
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


def _problems(report: EvaluationReport) -> list[str]:
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
    problems = _problems(report)
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


def _write_report(report: EvaluationReport, config: EvaluateConfig) -> None:
    s3 = config.s3
    buffer = io.BytesIO()
    pq.write_table(per_image_table(report.results), buffer, compression="zstd")
    write_bytes_atomic(join_uri(config.output, "per_image.parquet"), buffer.getvalue(), s3)
    text = json.dumps(_metrics_json(report, config), indent=2) + "\n"
    write_bytes_atomic(join_uri(config.output, "metrics.json"), text.encode(), s3)
    write_bytes_atomic(join_uri(config.output, "metrics.md"), _markdown(report, config).encode(), s3)


def _pairing(config: EvaluateConfig) -> PairingResult:
    if config.run is not None:
        return pairs_from_manifest(config.run, config.gt, config.s3, config.dataset_name)
    return pair_masks(str(config.pred), config.gt, config.s3, config.dataset_name)


def run(config: EvaluateConfig) -> EvaluationReport:
    """Pair, score, aggregate and (when anything was paired) write the report."""
    started = time.perf_counter()
    pairing = _pairing(config)
    pairs = pairing.pairs
    mode = config.parallel
    if mode == "auto":
        mode = "ray" if len(pairs) >= RAY_MIN_PAIRS else "local"
    log.info("%d pairs in %d datasets, scoring on %s", len(pairs), len(pairing.datasets), mode)
    if mode == "ray" and pairs:
        from .ray_startup import start_ray

        started_ray = start_ray(config.ray_address, config.workers)
        try:
            results = score_pairs_ray(pairs, config.s3, config.hce, config.workers)
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    else:
        results = score_pairs_local(pairs, config.s3, config.hce)
    report = EvaluationReport(aggregate(results, config.hce), pairing, results, mode, config.output)
    if pairs:
        _write_report(report, config)
    log.info("scored %d of %d pairs in %.1f s", report.scored, len(pairs), time.perf_counter() - started)
    return report


_FLAGS: dict[str, dict[str, Any]] = {
    "pred": {},
    "run": {},
    "gt": {},
    "output": {},
    "dataset_name": {},
    "parallel": {"choices": ["auto", "local", "ray"]},
    "workers": {"type": int},
    "hce": {"action": argparse.BooleanOptionalAction},
    "s3_endpoint_url": {},
    "s3_region": {},
    "ray_address": {},
}


def parse_args(argv: list[str] | None = None) -> EvaluateConfig:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.evaluate",
        description="Score predicted masks against ground truth (S, F, E, wF, MAE, HCE) with pysodmetrics.",
    )
    sources = parser.add_mutually_exclusive_group(required=True)
    for name, options in _FLAGS.items():
        field = EvaluateConfig.model_fields[name]
        target = sources if name in ("pred", "run") else parser
        target.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, help=field.description, **options
        )
    args = parser.parse_args(argv)
    try:
        return EvaluateConfig(**{k: v for k, v in vars(args).items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = parse_args(argv)
        report = run(config)
    except (ConfigError, StorageAuthError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.datasets:
        print("\n" + markdown_table(report.datasets))
    for line in _problems(report):
        print(line)
    if not report.pairing.pairs:
        print(
            f"error: no prediction under {config.predictions} matches a ground-truth mask under "
            f"{config.gt} (files are paired by relative path without extension; see the lists above)",
            file=sys.stderr,
        )
        return 2
    if not report.scored:
        print(f"error: none of the {len(report.pairing.pairs)} pairs could be read", file=sys.stderr)
        return 2
    print(f"report: {', '.join(join_uri(config.output, name) for name in REPORT_FILES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One evaluation from start to end: pair, score (locally or on Ray), aggregate, write."""

from __future__ import annotations

import logging
import time

from connectors.pairs import PairingResult, pair_masks, pairs_from_manifest

from .aggregation import EvaluationReport, aggregate
from .config import RAY_MIN_PAIRS, EvaluateConfig
from .outputs import write_report
from .scoring import score_pairs_local, score_pairs_ray

log = logging.getLogger("jobs.evaluate")


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
        from ..common.ray_startup import start_ray

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
        write_report(report, config)
    log.info("scored %d of %d pairs in %.1f s", report.scored, len(pairs), time.perf_counter() - started)
    return report

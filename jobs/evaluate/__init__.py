"""`python -m jobs.evaluate`: score predicted masks against ground truth, per image and per dataset.

pair files by key (connectors.pairs) -> read both masks, resize the prediction to the ground truth's
size, score the pair with pysodmetrics (birefnet_core.metrics), locally or as a Ray Data map ->
accumulate every dataset on the driver in pair order -> per_image.parquet, metrics.json, metrics.md.

Per-image scores are computed wherever is fastest, but the dataset numbers are always accumulated
on the driver in the pairs' sorted order, so local and Ray runs give bit-identical results, equal
to feeding the library the same arrays directly.
"""

from .aggregation import EvaluationReport, aggregate
from .cli import COMMAND, evaluate, main
from .config import RAY_MIN_PAIRS, EvaluateConfig
from .evaluation import run
from .outputs import markdown_table, per_image_table
from .scoring import PairScore, score_pair, score_pairs_local, score_pairs_ray

__all__ = [
    "COMMAND",
    "RAY_MIN_PAIRS",
    "EvaluateConfig",
    "EvaluationReport",
    "PairScore",
    "aggregate",
    "evaluate",
    "main",
    "markdown_table",
    "per_image_table",
    "run",
    "score_pair",
    "score_pairs_local",
    "score_pairs_ray",
]

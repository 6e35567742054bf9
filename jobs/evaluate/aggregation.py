"""Dataset numbers from per-image scores, and the outcome of a whole evaluation."""

from __future__ import annotations

from dataclasses import dataclass

from birefnet_core.metrics import SODEvaluator
from connectors.pairs import PairingResult

from .scoring import PairScore


@dataclass(frozen=True)
class EvaluationReport:
    """What an evaluation found: per-dataset numbers, the pairing and every pair's outcome."""

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

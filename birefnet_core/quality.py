"""Per-mask quality signals for triage: which masks a person should look at.

All signals are computed from the probability map alone (no ground truth), cheaply enough to
run on every output of a nightly job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["MaskQuality", "mask_quality"]

#: A mask with less (more) than this fraction of foreground pixels is flagged empty (full).
EMPTY_FRACTION = 0.001


@dataclass(frozen=True)
class MaskQuality:
    mean_confidence: float  # mean |2p - 1|: 1 = every pixel certain, 0 = every pixel at 0.5
    uncertain_fraction: float  # share of pixels with 0.1 < p < 0.9
    foreground_fraction: float  # share of pixels with p >= 0.5
    is_empty: bool
    is_full: bool

    def as_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def mask_quality(probabilities: np.ndarray) -> MaskQuality:
    """Signals of a float [0, 1] or uint8 0..255 probability map."""
    p = probabilities.astype(np.float32) / 255.0 if probabilities.dtype == np.uint8 else probabilities
    if p.size == 0:
        raise ValueError("cannot score an empty mask")
    foreground = float(np.count_nonzero(p >= 0.5)) / p.size
    return MaskQuality(
        mean_confidence=float(np.abs(2.0 * p - 1.0).mean()),
        uncertain_fraction=float(np.count_nonzero((p > 0.1) & (p < 0.9))) / p.size,
        foreground_fraction=foreground,
        is_empty=foreground < EMPTY_FRACTION,
        is_full=foreground > 1.0 - EMPTY_FRACTION,
    )

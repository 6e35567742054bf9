"""Per-mask quality signals for triage: which masks a person should look at.

All signals are computed from the probability map alone (no ground truth), cheaply enough to
run on every output of a nightly job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .quantization import quantize_probabilities

__all__ = ["MaskQuality", "mask_histogram", "mask_quality", "quality_from_histogram"]

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


_LEVELS = np.arange(256, dtype=np.float64) / 255.0
# OpenCV counts in float32, exact up to 2**24; larger masks are counted in slices of this size.
_HISTOGRAM_SLICE = 1 << 24


def mask_histogram(mask: np.ndarray) -> np.ndarray:
    """256-bin int64 histogram of an 8-bit mask of any shape (float masks are quantised first).

    OpenCV's counting loop is about three times faster than `np.bincount`, which widens every
    byte to a 64-bit index first.
    """
    if mask.dtype != np.uint8:
        mask = quantize_probabilities(mask)
    flat = mask.ravel()
    counts = np.zeros(256, np.int64)
    for start in range(0, flat.size, _HISTOGRAM_SLICE):
        part = flat[start : start + _HISTOGRAM_SLICE]
        counts += cv2.calcHist([part], [0], None, [256], [0, 256])[:, 0].astype(np.int64)
    return counts


def quality_from_histogram(counts: np.ndarray) -> MaskQuality:
    """Signals from a 256-bin histogram, so masks too large to hold (scenes) are scored chunk by chunk."""
    total = counts.sum()
    if total == 0:
        raise ValueError("cannot score an empty mask")
    share = counts / total
    foreground = float(share[_LEVELS >= 0.5].sum())
    return MaskQuality(
        mean_confidence=float((share * np.abs(2.0 * _LEVELS - 1.0)).sum()),
        uncertain_fraction=float(share[(_LEVELS > 0.1) & (_LEVELS < 0.9)].sum()),
        foreground_fraction=foreground,
        is_empty=foreground < EMPTY_FRACTION,
        is_full=foreground > 1.0 - EMPTY_FRACTION,
    )


def mask_quality(mask: np.ndarray) -> MaskQuality:
    """Signals of an 8-bit mask (0..255), computed from its histogram in one pass.

    Float probabilities are quantised first, so both inputs give the same numbers.
    """
    if mask.size == 0:
        raise ValueError("cannot score an empty mask")
    return quality_from_histogram(mask_histogram(mask))

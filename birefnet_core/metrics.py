"""Dichotomous / salient-object segmentation metrics: a thin layer over ``py_sod_metrics``.

The numbers are the ``pysodmetrics`` package's (Pang et al., used by the BiRefNet and DIS
evaluation code); nothing here re-implements a metric. ``SODEvaluator`` holds one instance of each
measure and adds what makes a distributed evaluation exact:

* ``step(pred, gt)`` feeds one pair to every measure, exactly as calling the library directly
  would, and returns that image's contribution as ``ImageScores``;
* ``add(scores)`` appends a contribution computed elsewhere (another process, a Ray worker) to the
  same per-image lists ``step`` fills. Every dataset number of the library is a mean over those
  lists (S, MAE, wF, HCE, the adaptive F and E) or the max/mean of the per-threshold mean curve
  (max/mean F and E), so adding the contributions in the same order gives bit-identical results.

Measures and dataset keys (``results()``):

============  =========================================================================
``S``         S-measure (alpha 0.5), ``Smeasure``
``maxF``      max over 256 thresholds of the mean F-measure curve (beta^2 = 0.3), ``FmeasureV2``
``meanF``     mean of that curve
``adpF``      mean F-measure at each image's adaptive threshold (2 x mean prediction)
``wF``        weighted F-measure (beta = 1, as the reference), ``WeightedFmeasure``
``maxE``      max of the mean E-measure curve, ``Emeasure``; ``meanE``: its mean
``adpE``      mean E-measure at the adaptive threshold
``MAE``       mean absolute error, ``MAE``
``HCE``       human correction effort (Qin et al., DIS, ECCV 2022), when the installed
              version has ``HumanCorrectionEffortMeasure``; it binarises the normalised
              prediction at 0.5 and the ground truth at 128 itself
============  =========================================================================

Inputs are uint8 H x W arrays as read from the mask files: the library binarises the ground truth
at 128 and min-max normalises the prediction. Predictions of another size must first be brought to
the ground truth's size with ``resize_to``, as the reference evaluation does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import py_sod_metrics

__all__ = [
    "DATASET_METRICS",
    "F_BETA2",
    "HCE_AVAILABLE",
    "IMAGE_METRICS",
    "ImageScores",
    "SODEvaluator",
    "image_metrics",
    "resize_to",
]

#: beta^2 of the F-measure, as in every SOD/DIS paper and the library's default.
F_BETA2 = 0.3
_HCE_CLASS = getattr(py_sod_metrics, "HumanCorrectionEffortMeasure", None)
HCE_AVAILABLE = _HCE_CLASS is not None
#: Dataset numbers of ``SODEvaluator.results()``, in the order of the paper-style tables.
DATASET_METRICS = ("S", "maxF", "meanF", "wF", "MAE", "maxE", "meanE", "adpF", "adpE", "HCE")
#: Per-image numbers of ``ImageScores.metrics()`` (max/mean over one image's threshold curve).
IMAGE_METRICS = DATASET_METRICS


def resize_to(pred: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bring a uint8 H x W prediction to the ground truth's ``(height, width)``.

    The BiRefNet reference (``evaluation/metrics.py``) reads both masks with ``cv2.imread`` as grey
    and calls ``cv2.resize(pred, (gt_w, gt_h))``: bilinear (``INTER_LINEAR``, OpenCV's default, no
    antialiasing) on the 8-bit values. The same call is made here; a prediction that already has
    the size is returned unchanged (OpenCV's same-size resize is a copy).
    """
    _check_mask(pred, "prediction")
    height, width = int(shape[0]), int(shape[1])
    if pred.shape == (height, width):
        return pred
    return cv2.resize(pred, (width, height), interpolation=cv2.INTER_LINEAR)


def _check_mask(array: np.ndarray, what: str) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 2:
        desc = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{what}: expected an H x W uint8 array, got {desc}")
    if array.size == 0:
        raise ValueError(f"{what}: empty array {array.shape}")


@dataclass(frozen=True)
class ImageScores:
    """One image's contribution to every measure: scalars and the 256-threshold F and E curves."""

    S: float
    MAE: float
    wF: float
    adpF: float
    adpE: float
    F_curve: np.ndarray = field(repr=False)
    E_curve: np.ndarray = field(repr=False)
    HCE: float | None = None

    def metrics(self) -> dict[str, float | None]:
        """Per-image numbers keyed like ``DATASET_METRICS`` (max/mean over this image's curves)."""
        return {
            "S": self.S,
            "maxF": float(self.F_curve.max()),
            "meanF": float(self.F_curve.mean()),
            "wF": self.wF,
            "MAE": self.MAE,
            "maxE": float(self.E_curve.max()),
            "meanE": float(self.E_curve.mean()),
            "adpF": self.adpF,
            "adpE": self.adpE,
            "HCE": self.HCE,
        }


class SODEvaluator:
    """Accumulates pysodmetrics measures over a dataset; see the module docstring.

    ``hce=False`` skips the human correction effort, by far the slowest measure on large masks
    (and unavailable in old pysodmetrics versions, where it is skipped regardless).
    """

    def __init__(self, hce: bool = True) -> None:
        self.smeasure = py_sod_metrics.Smeasure()
        self.mae = py_sod_metrics.MAE()
        self.wfmeasure = py_sod_metrics.WeightedFmeasure()
        self.emeasure = py_sod_metrics.Emeasure()
        self._f = py_sod_metrics.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=F_BETA2)
        self.fmeasure = py_sod_metrics.FmeasureV2(metric_handlers={"fm": self._f})
        self.hce = _HCE_CLASS() if hce and _HCE_CLASS is not None else None
        self.count = 0

    @property
    def with_hce(self) -> bool:
        return self.hce is not None

    def step(self, pred: np.ndarray, gt: np.ndarray) -> ImageScores:
        """Feed one pair (uint8 H x W, same shape) to every measure; returns its contribution."""
        _check_mask(pred, "prediction")
        _check_mask(gt, "ground truth")
        if pred.shape != gt.shape:
            raise ValueError(
                f"prediction {pred.shape} and ground truth {gt.shape} differ in size; resize_to() first"
            )
        for measure in self._measures():
            measure.step(pred=pred, gt=gt)
        self.count += 1
        return ImageScores(
            S=float(self.smeasure.sms[-1]),
            MAE=float(self.mae.maes[-1]),
            wF=float(self.wfmeasure.weighted_fms[-1]),
            adpF=float(self._f.adaptive_results[-1]),
            adpE=float(self.emeasure.adaptive_ems[-1]),
            F_curve=np.asarray(self._f.dynamic_results[-1], dtype=np.float64),
            E_curve=np.asarray(self.emeasure.changeable_ems[-1], dtype=np.float64),
            HCE=float(self.hce.hces[-1]) if self.hce is not None else None,
        )

    def add(self, scores: ImageScores) -> None:
        """Append a contribution computed by ``step`` of another evaluator (e.g. on a worker)."""
        if self.hce is not None and scores.HCE is None:
            raise ValueError("these scores were computed without HCE; use SODEvaluator(hce=False)")
        self.smeasure.sms.append(scores.S)
        self.mae.maes.append(scores.MAE)
        self.wfmeasure.weighted_fms.append(scores.wF)
        self._f.adaptive_results.append(scores.adpF)
        self._f.dynamic_results.append(scores.F_curve)
        self.emeasure.adaptive_ems.append(scores.adpE)
        self.emeasure.changeable_ems.append(scores.E_curve)
        if self.hce is not None:
            self.hce.hces.append(scores.HCE)
        self.count += 1

    def _measures(self) -> list[Any]:
        measures = [self.smeasure, self.fmeasure, self.wfmeasure, self.emeasure, self.mae]
        return [*measures, self.hce] if self.hce is not None else measures

    def results(self) -> dict[str, float]:
        """Dataset numbers keyed like ``DATASET_METRICS`` (``HCE`` only when measured)."""
        if self.count == 0:
            raise ValueError("no images were evaluated")
        f = self.fmeasure.get_results()["fm"]
        e = self.emeasure.get_results()["em"]
        out = {
            "S": float(self.smeasure.get_results()["sm"]),
            "maxF": float(f["dynamic"].max()),
            "meanF": float(f["dynamic"].mean()),
            "wF": float(self.wfmeasure.get_results()["wfm"]),
            "MAE": float(self.mae.get_results()["mae"]),
            "maxE": float(e["curve"].max()),
            "meanE": float(e["curve"].mean()),
            "adpF": float(f["adaptive"]),
            "adpE": float(e["adp"]),
        }
        if self.hce is not None:
            out["HCE"] = float(self.hce.get_results()["hce"])
        return out


def image_metrics(pred: np.ndarray, gt: np.ndarray, hce: bool = True) -> dict[str, float | None]:
    """Per-image numbers for one pair (same size), from a fresh evaluator.

    Creating the measure objects costs microseconds next to the measures themselves, so one
    evaluator per image is fine. ``maxF``/``maxE`` here are the maxima of this image's own curves;
    a dataset's ``maxF`` is the maximum of the *mean* curve, not the mean of these.
    """
    return SODEvaluator(hce=hce).step(pred, gt).metrics()

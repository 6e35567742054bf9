"""birefnet_core.metrics gives exactly what pysodmetrics gives on the same arrays."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import py_sod_metrics
import pytest

from birefnet_core.metrics import (
    DATASET_METRICS,
    HCE_AVAILABLE,
    SODEvaluator,
    image_metrics,
    resize_to,
)

TOL = 1e-6


def _blob_gt(h: int, w: int, seed: int) -> np.ndarray:
    """A binary 0/255 mask with an ellipse and a thin bar (structure for S-measure and HCE)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
    cv2.ellipse(mask, centre, (w // 5, h // 6), float(rng.integers(0, 180)), 0, 360, 255, -1)
    cv2.line(mask, (2, h - 5), (w - 3, h // 3), 255, 2)
    return mask


def _soft_pred(gt: np.ndarray, seed: int) -> np.ndarray:
    """A plausible soft prediction: blurred, shifted ground truth plus noise."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(gt, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1)).astype(
        np.float64
    )
    blurred = cv2.GaussianBlur(shifted, (0, 0), 2.0) + rng.normal(0, 20, gt.shape)
    return np.clip(blurred, 0, 255).astype(np.uint8)


def _dataset() -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred, gt) pairs as read from files: one prediction at a different size, empty and full gt."""
    pairs = []
    for seed, (h, w) in enumerate([(48, 64), (60, 40), (33, 71), (50, 50)]):
        gt = _blob_gt(h, w, seed)
        pairs.append((_soft_pred(gt, seed + 10), gt))
    small = cv2.resize(_soft_pred(pairs[0][1], 99), (37, 23), interpolation=cv2.INTER_AREA)
    pairs.append((small, pairs[0][1]))  # 23x37 prediction for a 48x64 ground truth
    pairs.append((np.full((20, 30), 7, np.uint8), np.zeros((20, 30), np.uint8)))  # nothing to find
    pairs.append((_soft_pred(np.full((20, 30), 255, np.uint8), 5), np.full((20, 30), 255, np.uint8)))
    return pairs


def _direct(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The library's own objects fed the resized arrays: what the reference evaluation does."""
    sm, em, wfm, mae = (
        py_sod_metrics.Smeasure(),
        py_sod_metrics.Emeasure(),
        py_sod_metrics.WeightedFmeasure(),
        py_sod_metrics.MAE(),
    )
    fm = py_sod_metrics.FmeasureV2(
        metric_handlers={
            "fm": py_sod_metrics.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3)
        }
    )
    hce = py_sod_metrics.HumanCorrectionEffortMeasure() if HCE_AVAILABLE else None
    for pred, gt in pairs:
        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]))  # the reference's call, default bilinear
        for measure in (sm, fm, em, wfm, mae, hce):
            if measure is not None:
                measure.step(pred=pred, gt=gt)
    f, e = fm.get_results()["fm"], em.get_results()["em"]
    out = {
        "S": sm.get_results()["sm"],
        "maxF": f["dynamic"].max(),
        "meanF": f["dynamic"].mean(),
        "wF": wfm.get_results()["wfm"],
        "MAE": mae.get_results()["mae"],
        "maxE": e["curve"].max(),
        "meanE": e["curve"].mean(),
        "adpF": f["adaptive"],
        "adpE": e["adp"],
    }
    if hce is not None:
        out["HCE"] = hce.get_results()["hce"]
    return {k: float(v) for k, v in out.items()}


def _evaluate(pairs: list[tuple[np.ndarray, np.ndarray]]) -> SODEvaluator:
    evaluator = SODEvaluator()
    for pred, gt in pairs:
        evaluator.step(resize_to(pred, gt.shape), gt)
    return evaluator


def test_dataset_numbers_equal_pysodmetrics_directly():
    pairs = _dataset()
    got = _evaluate(pairs).results()
    want = _direct(pairs)
    assert set(got) == set(want) == {m for m in DATASET_METRICS if m != "HCE" or HCE_AVAILABLE}
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=TOL), name


def test_f_measure_matches_the_references_legacy_fmeasure_class():
    """BiRefNet's evaluation/metrics.py uses the older Fmeasure class; FmeasureV2 agrees with it."""
    pairs = _dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will be removed, use FmeasureV2"
        legacy = py_sod_metrics.Fmeasure()
    for pred, gt in pairs:
        legacy.step(pred=resize_to(pred, gt.shape), gt=gt)
    fm = legacy.get_results()["fm"]
    got = _evaluate(pairs).results()
    assert got["maxF"] == pytest.approx(fm["curve"].max(), abs=TOL)
    assert got["meanF"] == pytest.approx(fm["curve"].mean(), abs=TOL)
    assert got["adpF"] == pytest.approx(fm["adp"], abs=TOL)


def test_adding_scores_from_other_evaluators_is_bit_identical():
    """What a distributed run does: per-image evaluators on workers, one accumulator on the driver."""
    pairs = _dataset()
    stepped = _evaluate(pairs)
    merged = SODEvaluator()
    for pred, gt in pairs:
        merged.add(SODEvaluator().step(resize_to(pred, gt.shape), gt))
    assert merged.count == stepped.count == len(pairs)
    assert merged.results() == stepped.results()


def test_image_metrics_are_the_library_on_one_pair():
    pred, gt = _dataset()[4]
    pred = resize_to(pred, gt.shape)
    got = image_metrics(pred, gt)
    want = _direct([(pred, gt)])
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=TOL), name


def test_resize_to_is_the_references_cv2_call():
    pred = np.random.default_rng(0).integers(0, 256, (23, 37), dtype=np.uint8)
    resized = resize_to(pred, (48, 64))
    assert resized.shape == (48, 64) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, cv2.resize(pred, (64, 48)))
    assert resize_to(pred, (23, 37)) is pred


def test_without_hce():
    pairs = _dataset()[:2]
    evaluator = SODEvaluator(hce=False)
    scores = [evaluator.step(resize_to(p, g.shape), g) for p, g in pairs]
    assert "HCE" not in evaluator.results()
    assert scores[0].metrics()["HCE"] is None
    if HCE_AVAILABLE:
        with pytest.raises(ValueError, match="without HCE"):
            SODEvaluator(hce=True).add(scores[0])


def test_bad_inputs_are_refused_with_a_reason():
    gt = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match="resize_to"):
        SODEvaluator().step(np.zeros((5, 10), np.uint8), gt)
    with pytest.raises(ValueError, match="uint8"):
        SODEvaluator().step(np.zeros((10, 10), np.float32), gt)
    with pytest.raises(ValueError, match="no images"):
        SODEvaluator().results()

"""The bundled demo model makes real predictions: on held-out generated scenes (a seed never used in
training) through the predictor, tiling, the batch job, the evaluation and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birefnet_core import load_model
from birefnet_core.metrics import SODEvaluator
from birefnet_core.predictor import Predictor
from birefnet_core.tiling import TilingOptions, predict_tiled
from connectors.pairs import read_mask
from connectors.synthetic import training_scene
from jobs.evaluate import main as evaluate_main
from jobs.report import main as report_main
from jobs.segment import main as segment_main
from jobs.synthesize import SynthesizeConfig, synthesize

#: The demo model was trained on seed 1 (birefnet_core/pretrained/README.md); this one is unseen.
HELD_OUT_SEED = 999


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("held_out")
    synthesize(SynthesizeConfig(output=str(root), count=24, seed=HELD_OUT_SEED))
    return root


def _scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    evaluator = SODEvaluator(hce=False)
    for prediction, gt in pairs:
        evaluator.step(prediction, gt)
    return evaluator.results()


def test_held_out_scenes_are_segmented_well(held_out):
    predictor = Predictor(load_model("demo"))
    images = sorted((held_out / "im").glob("*.jpg"))
    masks = predictor.predict([np.asarray(Image.open(p).convert("RGB")) for p in images])
    gts = [read_mask(str(held_out / "gt" / f"{p.stem}.png")) for p in images]
    scores = _scores([((m * 255).round().astype(np.uint8), gt) for m, gt in zip(masks, gts, strict=True)])
    assert scores["S"] >= 0.88 and scores["MAE"] <= 0.05, scores


def test_a_scene_larger_than_the_working_size_tiles_without_losing_quality():
    image, gt = training_scene(768, 640, seed=HELD_OUT_SEED * 7)
    predictor = Predictor(load_model("demo"))
    options = TilingOptions(tile_size=256, overlap=64, batch_size=4, context_size=256)
    tiled = predict_tiled(np.asarray(image), lambda x: predictor.model(x).sigmoid(), options)
    whole = predictor.predict([np.asarray(image)])[0]
    tiled_mask = (tiled.probabilities * 255).round().astype(np.uint8)
    assert _scores([(tiled_mask, gt)])["S"] >= 0.8
    agreement = np.mean((tiled.probabilities > 0.5) == (whole > 0.5))
    assert agreement >= 0.9, agreement


@pytest.mark.slow  # three commands end to end on Ray
def test_job_evaluation_and_report_on_real_predictions(embedded_ray, held_out, tmp_path, capsys):
    out = tmp_path / "out"
    code = segment_main(["--input", str(held_out / "im"), "--output", str(out), "--variant", "demo",
                         "--device", "cpu", "--outputs", "mask,cutout", "--batch-size", "4"])  # fmt: skip
    assert code == 0
    assert evaluate_main(["--run", str(out), "--gt", str(held_out / "gt"), "--output", str(tmp_path / "ev"),
                          "--no-hce"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    [dataset] = metrics["datasets"].values()
    assert dataset["S"] >= 0.88 and dataset["MAE"] <= 0.05, dataset
    assert report_main(["--run", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "24" in page and "RANDOM" not in page

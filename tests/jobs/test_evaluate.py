"""`python -m jobs.evaluate` on a small generated DIS5K-style dataset."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics
import pyarrow.parquet as pq
import pytest
from PIL import Image

from connectors.manifest import write_manifest_part
from jobs.evaluate import main, markdown_table
from tests.support.mask_files import write_image

TOL = 1e-6


def _mask(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, 2 * h // 3)))
    cv2.circle(mask, centre, h // 4, 255, -1)
    cv2.line(mask, (1, 1), (w - 2, h - 3), 255, 2)
    return mask


def _prediction(gt: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    soft = cv2.GaussianBlur(np.roll(gt, 2, axis=1).astype(np.float64), (0, 0), 1.5)
    return np.clip(soft + rng.normal(0, 15, gt.shape), 0, 255).astype(np.uint8)


# key -> (ground-truth size, what the prediction is)
GT = {
    "DIS-VD/a": ((40, 56), "same size"),
    "DIS-VD/b": ((36, 48), "jpeg"),
    "DIS-VD/c": ((44, 60), "half size"),  # prediction at another size: resized as the reference does
    "DIS-VD/d": ((30, 30), "missing"),
    "DIS-TE1/e": ((32, 40), "same size"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """DIS5K-style ground truth (``<set>/gt/*.png`` beside ``<set>/im/*.jpg``) and predictions.

    Returns the roots and, per paired key, the (prediction, ground truth) arrays exactly as a reader
    sees them: the JPEG prediction is decoded by Pillow here, independently of the code under test.
    """
    root = tmp_path_factory.mktemp("eval")
    gt_root, pred_root = root / "DIS5K", root / "preds"
    arrays = {}
    for i, (key, ((h, w), kind)) in enumerate(GT.items()):
        name, stem = key.split("/")
        gt = _mask(h, w, i)
        write_image(gt_root / name / "gt" / f"{stem}.png", gt)
        write_image(gt_root / name / "im" / f"{stem}.jpg", np.zeros((h, w, 3), np.uint8))  # inputs: not masks
        pred = _prediction(gt, i + 100)
        if kind == "missing":
            continue
        if kind == "half size":
            pred = cv2.resize(pred, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        if kind == "jpeg":
            path = pred_root / name / f"{stem}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pred).save(path, quality=90)
            pred = np.asarray(Image.open(path).convert("L"))
        else:
            write_image(pred_root / name / f"{stem}.png", pred)
        arrays[key] = (pred, gt)
    write_image(pred_root / "DIS-VD" / "extra.png", _mask(20, 20, 9))  # no ground truth for this one
    return gt_root, pred_root, arrays


def _direct(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """pysodmetrics fed the same arrays, resized with the reference's cv2 call, in key order."""
    sm, em, wfm, mae, hce = (
        py_sod_metrics.Smeasure(),
        py_sod_metrics.Emeasure(),
        py_sod_metrics.WeightedFmeasure(),
        py_sod_metrics.MAE(),
        py_sod_metrics.HumanCorrectionEffortMeasure(),
    )
    fm = py_sod_metrics.FmeasureV2(
        metric_handlers={"fm": py_sod_metrics.FmeasureHandler(True, True, beta=0.3)}
    )
    for pred, gt in pairs:
        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]))
        for measure in (sm, fm, em, wfm, mae, hce):
            measure.step(pred=pred, gt=gt)
    f, e = fm.get_results()["fm"], em.get_results()["em"]
    return {
        "S": float(sm.get_results()["sm"]),
        "maxF": float(f["dynamic"].max()),
        "meanF": float(f["dynamic"].mean()),
        "wF": float(wfm.get_results()["wfm"]),
        "MAE": float(mae.get_results()["mae"]),
        "maxE": float(e["curve"].max()),
        "meanE": float(e["curve"].mean()),
        "adpF": float(f["adaptive"]),
        "adpE": float(e["adp"]),
        "HCE": float(hce.get_results()["hce"]),
    }


def _expected(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    by_set: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for key in sorted(arrays):
        by_set.setdefault(key.split("/")[0], []).append(arrays[key])
    return {name: _direct(pairs) for name, pairs in by_set.items()}


@pytest.fixture(scope="module")
def local_report(dataset, tmp_path_factory):
    gt_root, pred_root, _ = dataset
    out = tmp_path_factory.mktemp("report")
    rc = main(["--pred", str(pred_root), "--gt", str(gt_root), "--output", str(out), "--parallel", "local"])
    return rc, out, json.loads((out / "metrics.json").read_text())


def test_dataset_numbers_equal_pysodmetrics_on_the_same_arrays(dataset, local_report):
    rc, _, report = local_report
    assert rc == 0
    want = _expected(dataset[2])
    assert sorted(report["datasets"]) == ["DIS-TE1", "DIS-VD"]
    for name, numbers in want.items():
        got = report["datasets"][name]
        assert got["images"] == sum(k.startswith(name + "/") for k in dataset[2])
        for metric, value in numbers.items():
            assert got[metric] == pytest.approx(value, abs=TOL), (name, metric)


def test_unpaired_and_missing_files_are_reported_by_name(local_report, capsys):
    _, _, report = local_report
    assert report["missing_pred"] == ["DIS-VD/gt/d.png"]
    assert report["unpaired_pred"] == ["DIS-VD/extra.png"]
    assert (report["pairs"], report["scored"], report["failed"]) == (4, 4, [])


def test_cli_prints_the_table_and_the_unpaired_names(dataset, tmp_path, capsys):
    gt_root, pred_root, _ = dataset
    assert main(["--pred", str(pred_root), "--gt", str(gt_root), "--output", str(tmp_path), "--no-hce"]) == 0
    out = capsys.readouterr().out
    assert "| DIS-VD | 3 |" in out and "| DIS-TE1 | 1 |" in out
    assert "DIS-VD/gt/d.png" in out and "DIS-VD/extra.png" in out
    assert "HCE" not in json.loads((tmp_path / "metrics.json").read_text())["datasets"]["DIS-VD"]


def test_markdown_has_the_papers_layout(local_report):
    _, out, report = local_report
    text = (out / "metrics.md").read_text()
    header = "| Dataset | Images | S-measure | maxF | meanF | wF | MAE | maxE | meanE | adpF | adpE | HCE |"
    assert header in text
    row = next(line for line in text.splitlines() if line.startswith("| DIS-VD |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    numbers = report["datasets"]["DIS-VD"]
    assert cells[1] == "3"
    assert cells[2] == f"{numbers['S']:.3f}" and cells[6] == f"{numbers['MAE']:.3f}"
    assert cells[-1] == f"{numbers['HCE']:.0f}"
    assert "DIS-VD/gt/d.png" in text


def test_per_image_rows(dataset, local_report):
    _, out, _ = local_report
    table = pq.read_table(out / "per_image.parquet")
    rows = {row["key"]: row for row in table.to_pylist()}
    assert list(rows) == ["DIS-TE1/e", "DIS-VD/a", "DIS-VD/b", "DIS-VD/c"]
    c = rows["DIS-VD/c"]
    assert (c["pred_height"], c["pred_width"], c["gt_height"], c["gt_width"]) == (22, 30, 44, 60)
    assert c["resized"] and not rows["DIS-VD/a"]["resized"]
    assert rows["DIS-VD/b"]["pred_uri"].endswith("DIS-VD/b.jpg")
    pred, gt = dataset[2]["DIS-VD/a"]
    assert rows["DIS-VD/a"]["S"] == pytest.approx(_direct([(pred, gt)])["S"], abs=TOL)
    assert all(row["error"] is None for row in rows.values())


def test_unreadable_prediction_is_reported_not_fatal(dataset, tmp_path, capsys):
    gt_root, _, _ = dataset
    preds = tmp_path / "preds"
    write_image(preds / "DIS-VD" / "a.png", _mask(40, 56, 0))
    (preds / "DIS-VD" / "b.png").write_bytes(b"not a png")
    rc = main(["--pred", str(preds), "--gt", str(gt_root), "--output", str(tmp_path / "out"), "--no-hce"])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [f["key"] for f in report["failed"]] == ["DIS-VD/b"]
    assert "b.png" in report["failed"][0]["error"]
    assert report["datasets"]["DIS-VD"]["images"] == 1
    assert "DIS-VD/b" in capsys.readouterr().out


def test_no_pairs_at_all_exits_2_naming_the_files(dataset, tmp_path, capsys):
    gt_root, _, _ = dataset
    write_image(tmp_path / "preds" / "unrelated.png", _mask(10, 10, 1))
    rc = main(["--pred", str(tmp_path / "preds"), "--gt", str(gt_root), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 2
    assert "no prediction" in captured.err and "unrelated.png" in captured.out
    assert not (tmp_path / "out").exists()


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["--pred", str(tmp_path / "nowhere"), "--gt", str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["--pred", "a", "--run", "b", "--gt", "c"]) == 2
    error = capsys.readouterr().err.strip()
    assert "exactly one of --pred" in error and "\n" not in error


def test_run_mode_reads_the_manifest(dataset, local_report, tmp_path):
    """A segmentation run over DIS5K's im/ folders (masks at masks/<set>/im/<name>.png), written to
    a bucket and since copied here: the masks are found under the given run root."""
    gt_root, _, arrays = dataset
    run_root = tmp_path / "run"
    common = {"run_id": "r1", "processed_at": datetime.now(UTC)}
    rows = []
    for key, (pred, _) in arrays.items():
        name, stem = key.split("/")
        relative = f"{name}/im/{stem}.jpg"
        write_image(run_root / "masks" / name / "im" / f"{stem}.png", pred)
        mask_uri = f"s3://old-bucket/run/masks/{name}/im/{stem}.png"
        rows.append({"id": key, "source_uri": f"/data/{relative}", "relative_path": relative, **common})
        rows[-1].update(status="ok", mask_uri=mask_uri)
    rows.append(
        {"id": "x", "source_uri": "/data/DIS-VD/im/d.jpg", "relative_path": "DIS-VD/im/d.jpg", **common}
    )
    rows[-1].update(status="error", error="d.jpg: truncated")
    write_manifest_part(str(run_root), rows)
    out = tmp_path / "out"
    assert (
        main(["--run", str(run_root), "--gt", str(gt_root), "--output", str(out), "--parallel", "local"]) == 0
    )
    report = json.loads((out / "metrics.json").read_text())
    assert report["missing_pred"] == ["DIS-VD/gt/d.png"]
    # the masks are the same arrays as the --pred folder's (the JPEG one as decoded), so are the numbers
    assert report["datasets"] == local_report[2]["datasets"]


def test_ray_path_gives_identical_numbers(dataset, local_report, embedded_ray, tmp_path):
    gt_root, pred_root, _ = dataset
    out = tmp_path / "ray"
    rc = main(
        [
            "--pred",
            str(pred_root),
            "--gt",
            str(gt_root),
            "--output",
            str(out),
            "--parallel",
            "ray",
            "--workers",
            "1",
        ]
    )
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["execution"] == "ray"
    assert report["datasets"] == local_report[2]["datasets"]
    local_rows = pq.read_table(local_report[1] / "per_image.parquet").drop_columns(["pred_uri", "gt_uri"])
    ray_rows = pq.read_table(out / "per_image.parquet").drop_columns(["pred_uri", "gt_uri"])
    assert ray_rows.equals(local_rows)


def test_markdown_table_keeps_only_measured_columns():
    table = markdown_table({"x": {"images": 1, "S": 0.5, "MAE": 0.01234}})
    assert table.splitlines()[0] == "| Dataset | Images | S-measure | MAE |"
    assert "| x | 1 | 0.500 | 0.012 |" in table

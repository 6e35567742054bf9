"""The segmentation job with `--backend onnxruntime`: an exported file, local or on S3, gives the
masks the PyTorch backend gives, bad inputs still become error rows, and the manifest says which
backend ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from connectors.manifest import read_manifest
from jobs.common import replicas
from jobs.common.cli import ConfigError, build_config
from jobs.common.replicas import load_inference_model
from jobs.segment import run
from jobs.segment.config import SegmentConfig
from tests.support.job_corpus import BAD, BOMB_LIMIT, GOOD, write_corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SHA256 = "d864684349e053caf604248403b98bbb96435dc731f24c0e10c7414ee27d9508"


def _config(src: Path, out: Path, **extra) -> SegmentConfig:
    values = {
        "input": str(src),
        "output": str(out),
        "variant": "demo",
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 2,
        "max_image_pixels": BOMB_LIMIT,
        **extra,
    }
    return build_config(SegmentConfig, values)


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {
        str(p.relative_to(out / "masks")): np.asarray(Image.open(p), np.int16)
        for p in (out / "masks").rglob("*.png")
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("in")
    write_corpus(src)
    return src


def test_onnxruntime_masks_match_torch_and_the_manifest_names_the_backend(
    embedded_ray, corpus, demo_onnx, tmp_path
):
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    run(_config(corpus, torch_out))
    summary = run(_config(corpus, onnx_out, weights=str(demo_onnx), backend="onnxruntime"))
    assert (summary.ok, summary.failed) == (len(GOOD), len(BAD))
    table = read_manifest(str(onnx_out)).to_pylist()
    ok = [row for row in table if row["status"] == "ok"]
    assert len(ok) == len(GOOD)
    assert {row["backend"] for row in ok} == {"onnxruntime"}
    assert {row["weights_sha256"] for row in ok} == {DEMO_SHA256}
    assert {row["weights_source"] for row in ok} == {str(demo_onnx)}
    assert {row["dtype"] for row in ok} == {"float32"}
    assert {row["backend"] for row in read_manifest(str(torch_out)).to_pylist() if row["status"] == "ok"} == {
        "torch"
    }
    want, got = _masks(torch_out), _masks(onnx_out)
    assert set(got) == set(want) and len(got) == len(GOOD)
    for name in want:
        assert np.abs(got[name] - want[name]).max() <= 1, name


@pytest.mark.slow
def test_the_job_reads_an_exported_file_from_s3(s3_server, s3_bucket, corpus, demo_onnx, tmp_path):
    s3_server.filesystem().put(str(demo_onnx), f"{s3_bucket}/models/birefnet-demo.onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(
        AWS_ACCESS_KEY_ID=s3_server.key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret,
        AWS_EC2_METADATA_DISABLED="true",
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.segment", "--input", str(corpus), "--output", str(out), "--variant", "demo",
         "--weights", f"s3://{s3_bucket}/models/birefnet-demo.onnx", "--backend", "onnxruntime",
         "--s3-endpoint-url", s3_server.endpoint_url, "--device", "cpu", "--num-cpus", "2",
         "--object-store-memory", "150000000", "--max-image-pixels", str(BOMB_LIMIT),
         "--max-failure-fraction", "0.5"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(GOOD)} ok, {len(BAD)} failed" in result.stdout
    ok = [row for row in read_manifest(str(out)).to_pylist() if row["status"] == "ok"]
    assert {row["backend"] for row in ok} == {"onnxruntime"}
    assert {row["weights_source"] for row in ok} == {f"s3://{s3_bucket}/models/birefnet-demo.onnx"}
    assert len(_masks(out)) == len(GOOD)


def test_a_checkpoint_is_exported_once_per_machine_and_then_reused(monkeypatch, demo_onnx, tmp_path):
    exports = []

    def fake_export(model, settings):
        exports.append(settings)
        return demo_onnx.read_bytes()

    monkeypatch.setattr(replicas, "export_onnx", fake_export)
    for _ in range(2):
        _, identity = load_inference_model(
            "demo", variant="demo", backend="onnxruntime", device="cpu", dtype="float32",
            s3=None, onnx_cache=str(tmp_path),
        )  # fmt: skip
        assert identity.backend == "onnxruntime" and identity.weights_sha256 == DEMO_SHA256
    assert len(exports) == 1 and exports[0].precision == "float32"
    [cached] = tmp_path.glob("*.onnx")
    assert cached.name.startswith(f"birefnet-{DEMO_SHA256[:16]}-float32-opset18-")


def test_a_file_exported_from_another_variant_is_refused(demo_onnx):
    with pytest.raises(ValueError, match="exported from variant 'demo', but the job runs 'lite'"):
        load_inference_model(str(demo_onnx), variant="lite", backend="onnxruntime", device="cpu",
                             dtype="float32", s3=None)  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"weights": "/models/m.onnx"}, "is an ONNX file: add --backend onnxruntime or tensorrt"),
        ({"backend": "tensorrt", "device": "cpu"}, "--backend tensorrt needs a CUDA device"),
        ({"backend": "onnxruntime", "compile": True}, "--compile apply to --backend torch only"),
        ({"backend": "onnx"}, "--backend"),
    ],
)
def test_backend_options_that_cannot_work_are_refused_in_one_line(extra, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path / "in", tmp_path / "out", **extra)

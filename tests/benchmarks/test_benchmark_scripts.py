"""The speed scripts run as documented (`python benchmarks/NAME.py`) and print JSON naming the
machine; the GPU one skips cleanly where there is no CUDA."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

#: Every script runs in a process of its own (torch, often Ray): seconds to a minute each.
pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]


def _run(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout[done.stdout.index("{") :])


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the benchmark really runs (minutes)")
def test_gpu_throughput_skips_cleanly_without_cuda():
    result = _run("gpu_throughput.py")
    assert result == {
        "benchmark": "gpu_throughput",
        "skipped": "no CUDA device (torch.cuda.is_available() is False)",
    }


def test_model_speed_reports_seconds_per_dtype_and_backend_with_the_machine():
    result = _run(
        "model_speed.py", "--backbone", "swin_v1_t", "--size", "64", "--dtypes", "float32",
        "--backends", "eager,channels_last", "--repeats", "1", "--warmup", "0", "--threads", "1",
    )  # fmt: skip
    assert result["seconds_per_image"]["float32"] > 0
    assert set(result["seconds_per_image_by_backend"]) == {"eager", "channels_last"}
    assert "cores" in result["machine"]


def test_train_speed_reports_samples_per_second_per_worker_count():
    result = _run("train_speed.py", "--size", "64", "--pairs", "12", "--batch-size", "2", "--workers", "1")
    [one] = result["results"]
    assert one["workers"] == 1 and one["samples_per_second"] > 0
    assert "cores" in result["machine"]


def test_tiling_reports_assembly_share_and_context_quality_per_scene_size():
    result = _run(
        "tiling.py", "--sizes", "700", "--tile", "128", "--overlap", "32", "--chunk", "256",
        "--context-scenes", "1", "--context-size", "384",
    )  # fmt: skip
    [run] = result["runs"]
    assert run["status"] == "ok" and run["chunks"] == 9
    assert 0 < run["assembly_share"] < 1 and run["seconds_per_megapixel"] > 0 and run["peak_rss_mb"] > 0
    for key in ("without_context", "with_context"):
        assert 0 < result["context"][key]["S"] <= 1 and 0 <= result["context"][key]["MAE"] <= 1
    assert "cores" in result["machine"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check really runs (minutes)")
def test_gpu_check_summarises_the_gpu_tests_and_the_benchmark_in_one_json(tmp_path):
    result = _run("gpu_check.py", "--out", str(tmp_path))
    assert result["check"] == "gpu" and result["gpu"] is None
    tests = result["tests"]
    assert tests["failed"] == 0 and tests["passed"] == 0 and tests["skipped"] > 0, tests
    assert result["throughput"]["skipped"].startswith("no CUDA device")
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == result


def test_backends_compares_torch_and_onnxruntime_on_the_same_input(demo_onnx):
    result = _run("backends.py", "--size", "64", "--repeats", "1", "--warmup", "0", "--onnx", str(demo_onnx))
    cases = result["results"]
    assert {"torch_fp32", "onnxruntime_fp32"} <= set(cases)
    assert cases["onnxruntime_fp32"]["max_abs_logit_diff_vs_torch_fp32"] <= 1e-3
    assert cases["torch_fp32"]["seconds_per_image"] > 0 and "cores" in result["machine"]


def test_pipeline_reports_stage_costs_and_end_to_end_throughput():
    result = _run(
        "pipeline.py", "--images", "2", "--width", "160", "--height", "120", "--resolution", "64",
        "--e2e-images", "2", "--e2e-resolution", "64",
    )  # fmt: skip
    assert result["benchmark"] == "pipeline" and result["images"] == 2
    assert result["non_model_cpu_seconds_per_image"]
    assert result["throughput"]["job_seconds"] > 0


def test_scale_reports_driver_memory_first_commit_and_done_index_load():
    result = _run("scale.py", "--sizes", "200", "--nights", "2", "--timeout", "240", "--full")
    [one] = result["results"]
    assert one["inputs_listed"] == 200 and one["new"] == 2
    assert one["driver_peak_rss_mb"] > 0 and one["seconds_to_first_commit"] is not None
    assert one["nights"] == 2 and one["startup_load_s_night_last"] >= 0
    assert "cores" in result["machine"]

"""onnxruntime backends: provider options, clear refusals, and the Predictor running an exported
file the way it runs the PyTorch model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from birefnet_core.onnx_runtime import BackendUnavailableError, OnnxRuntimeModel, execution_providers
from birefnet_core.predictor import Predictor
from birefnet_core.size import Size
from birefnet_core.weights import load_model
from tests.support.disc_images import disc_on_texture

CUDA = torch.device("cuda", 1)


def test_cpu_uses_the_cpu_provider():
    assert execution_providers("onnxruntime", torch.device("cpu")) == [("CPUExecutionProvider", {})]


def test_cuda_picks_convolutions_heuristically_and_runs_on_the_given_stream():
    [(name, options), (fallback, _)] = execution_providers("onnxruntime", CUDA, stream=1234)
    assert (name, fallback) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert options["device_id"] == "1"
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"
    assert options["has_user_compute_stream"] == "1" and options["user_compute_stream"] == "1234"


def test_tensorrt_caches_engines_and_builds_one_profile_for_the_job(tmp_path):
    providers = execution_providers(
        "tensorrt", CUDA, engine_cache=tmp_path, fp16=True, profile=(Size(1024, 768), 8)
    )
    assert [name for name, _ in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt = providers[0][1]
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_timing_cache_enable"] == "True" and trt["trt_fp16_enable"] == "True"
    assert trt["trt_profile_min_shapes"] == "image:1x3x1024x768"
    assert trt["trt_profile_max_shapes"] == trt["trt_profile_opt_shapes"] == "image:8x3x1024x768"


def test_tensorrt_on_a_cpu_is_refused_in_one_line():
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
        execution_providers("tensorrt", torch.device("cpu"))


def test_a_missing_provider_is_named(monkeypatch, demo_onnx):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: type("S", (), {"cuda_stream": 0})())
    with pytest.raises(BackendUnavailableError, match=r"TensorrtExecutionProvider.*has CPUExecutionProvider"):
        OnnxRuntimeModel(demo_onnx, backend="tensorrt", device="cuda")


def test_the_model_reads_variant_size_and_normalisation_from_the_file(demo_onnx):
    model = OnnxRuntimeModel(demo_onnx)
    assert model.variant.name == "demo" and model.size == Size(256, 256)
    assert model.precision == "float32" and model.backend == "onnxruntime"
    assert model.mean == pytest.approx((0.485, 0.456, 0.406))
    assert model.providers == ["CPUExecutionProvider"]


def test_the_predictor_gives_the_same_masks_with_onnxruntime(demo_onnx):
    images = [
        disc_on_texture(200, 300, seed=1),
        disc_on_texture(256, 256, seed=2),
        disc_on_texture(90, 70, seed=3),
    ]
    torch_masks = Predictor(load_model("demo")).predict(images, batch_size=2)
    predictor = Predictor(OnnxRuntimeModel(demo_onnx))
    assert predictor.backend == "onnxruntime" and predictor.size == Size(256, 256)
    onnx_masks = predictor.predict(images, batch_size=2)
    for want, got in zip(torch_masks, onnx_masks, strict=True):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4


def test_torch_only_options_are_refused_for_an_exported_model(demo_onnx):
    with pytest.raises(ValueError, match="torch backend only"):
        Predictor(OnnxRuntimeModel(demo_onnx), channels_last=True)


def _needs_provider(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        name not in ort.get_available_providers(), reason=f"onnxruntime here has no {name}"
    )


@pytest.mark.gpu
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("onnxruntime", marks=_needs_provider("CUDAExecutionProvider")),
        pytest.param("tensorrt", marks=_needs_provider("TensorrtExecutionProvider")),
    ],
)
def test_cuda_backends_match_the_cpu_session(demo_onnx, tmp_path, backend):
    x = torch.randn(2, 3, 256, 256)
    want = OnnxRuntimeModel(demo_onnx)(x)
    model = OnnxRuntimeModel(demo_onnx, backend=backend, device="cuda", engine_cache=tmp_path, max_batch=2)
    got = model(x.cuda()).cpu()
    assert torch.abs(got - want).max() <= 1e-2
    if backend == "tensorrt":
        assert any(tmp_path.iterdir()), "no engine was cached"

"""ONNX export: the torch network's outputs through onnxruntime, one file for every size and batch,
plain operators, metadata, and settings that make no sense refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from birefnet_core.onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxExportSettings, export_onnx
from birefnet_core.size import Size
from birefnet_core.weights import load_model
from tests.support.deterministic_weights import det_input

#: The opset's own operators, nothing from a vendor domain.
STANDARD_DOMAINS = {"", "ai.onnx"}


@pytest.fixture(scope="module")
def demo_model() -> torch.nn.Module:
    return load_model("demo")


@pytest.fixture(scope="module")
def demo_session(demo_onnx: Path) -> ort.InferenceSession:
    """The session-wide export (tests/support/onnx_models.py): one export serves every test. The
    network's own parity with the reference's logits is tested in torch (test_model.py); these
    tests show that the exported graph computes what the torch network computes."""
    return ort.InferenceSession(str(demo_onnx), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: torch.Tensor) -> np.ndarray:
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    return logits


@pytest.mark.parametrize(
    ("batch", "height", "width"), [(1, 256, 256), (2, 256, 256), (1, 320, 192), (2, 448, 384)]
)
def test_the_same_file_runs_other_sizes_and_batches_like_torch(
    demo_model, demo_session, batch, height, width
):
    x = det_input(batch=batch, h=height, w=width, seed=7)
    with torch.inference_mode():
        want = demo_model(x).numpy()
    got = _run(demo_session, x)
    assert got.shape == (batch, 1, height, width)
    assert np.abs(got - want).max() <= 1e-3


def test_the_demo_file_uses_standard_operators_and_says_what_it_is(demo_onnx):
    proto = onnx.load(demo_onnx)
    onnx.checker.check_model(proto, full_check=True)
    assert {node.domain for node in proto.graph.node} <= STANDARD_DOMAINS
    assert {o.domain for o in proto.opset_import} <= STANDARD_DOMAINS
    assert max(o.version for o in proto.opset_import) >= 17
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert proto.graph.output[0].name == OUTPUT_NAME
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"]
    meta = {p.key: p.value for p in proto.metadata_props}
    demo = load_model("demo")
    assert meta["variant"] == "demo"
    assert meta["backbone"] == "swin_v1_demo"
    assert meta["weights_sha256"] == demo.weights.sha256
    assert meta["working_size"] == "256x256"
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(meta["std"]) == pytest.approx([0.229, 0.224, 0.225])
    assert meta["opset"] == "18" and meta["precision"] == "float32" and meta["dynamic"] == "true"


@pytest.mark.slow  # an export of its own (half a minute)
def test_a_static_float16_graph_keeps_float32_inputs_and_outputs():
    model = load_model("demo")
    settings = OnnxExportSettings(dynamic=False, fp16=True, resolution=Size(64, 96), batch=2)
    proto = onnx.load_from_string(export_onnx(model, settings=settings))
    onnx.checker.check_model(proto, full_check=True)
    tensor = proto.graph.input[0].type.tensor_type
    assert tensor.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in tensor.shape.dim] == [2, 3, 64, 96]
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in proto.graph.initializer if t.name.startswith("model.") and np.prod(t.dims) > 1000]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["precision"] == "float16" and meta["working_size"] == "96x64" and meta["dynamic"] == "false"
    # The caller's model is left in float32.
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 17}, "opset 17 is too old"),
        ({"resolution": Size(256, 256)}, "dynamic=False"),
        ({"dynamic": False, "resolution": Size(250, 256)}, "multiple of 32"),
        ({"dynamic": False, "batch": 0}, "at least 1"),
    ],
)
def test_settings_that_make_no_sense_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnnxExportSettings(**kwargs)

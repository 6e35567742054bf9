"""The service's options and request parameters, checked without starting anything."""

from __future__ import annotations

import pytest

from jobs.common.cli import ConfigError, build_config, parse_config
from jobs.serve.api import RequestError, SegmentParams
from jobs.serve.config import ServeConfig


def test_autoscaling_needs_both_bounds_and_becomes_serves_config():
    config = parse_config(
        ServeConfig, ["--min-replicas", "1", "--max-replicas", "4", "--target-ongoing-requests", "2"]
    )
    assert config.autoscaling == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2.0}
    assert parse_config(ServeConfig, []).autoscaling is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_replicas": 1}, "--min-replicas and --max-replicas go together"),
        ({"min_replicas": 5, "max_replicas": 2}, "--min-replicas 5 exceeds --max-replicas 2"),
        ({"device": "cpu", "gpus_per_replica": 1}, "--device cpu with --gpus-per-replica 1"),
        ({"backend": "tensorrt", "device": "cpu"}, "--backend tensorrt needs a CUDA device"),
        ({"route_prefix": "api"}, "--route-prefix must start with '/'"),
        ({"weights": "model.onnx"}, "is an ONNX file: add --backend onnxruntime or tensorrt"),
        ({"max_body_bytes": 10}, "--max-body-bytes: Input should be greater than or equal to 1024"),
        ({"replica": 2}, "--replica: Extra inputs are not permitted"),
    ],
)
def test_bad_service_options_are_refused_in_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as refused:
        build_config(ServeConfig, values)
    assert "\n" not in str(refused.value)


def test_request_parameters_from_query_and_form_fields():
    params = SegmentParams.from_fields({"output": "mask,cutout", "box": "1.5,2,30,40.2", "format": "json"})
    assert (params.output, params.box, params.format) == (["mask", "cutout"], "1,2,30,41", "json")
    assert SegmentParams.from_fields({}, accept="application/json").format == "json"
    assert SegmentParams.from_fields({}, accept="image/png, application/json").format == "png"
    assert SegmentParams.from_fields({"refine_foreground": ""}).refine_foreground is True
    assert SegmentParams.from_fields({"background": "#FF8000"}).background == (255, 128, 0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"output": ""}, "output must name mask, cutout or probabilities"),
        ({"output": "mask,mask,cutout"}, "a PNG answer holds one output"),
        ({"background": "300,0,0"}, "background: expected a colour"),
        ({"refine_foreground": "perhaps"}, "refine_foreground: Input should be a valid boolean"),
    ],
)
def test_bad_request_parameters_are_400s_naming_the_parameter(fields, message):
    with pytest.raises(RequestError, match=message) as refused:
        SegmentParams.from_fields(fields)
    assert refused.value.status == 400

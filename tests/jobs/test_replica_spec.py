"""One typed replica specification from every command's config to the model it loads."""

from __future__ import annotations

import pickle

import pytest

from birefnet_core.size import Size
from connectors.storage import S3Options
from jobs.common.replicas import ReplicaSpec
from jobs.predict.config import PredictConfig
from jobs.segment.config import SegmentConfig
from jobs.segment.pipelines import Runtime, replica_spec
from jobs.serve.config import ServeConfig


def test_a_misspelt_option_fails_where_the_spec_is_made() -> None:
    with pytest.raises(TypeError, match="compil"):
        ReplicaSpec("random", variant="lite", device="cpu", dtype="float32", s3=S3Options(), compil=True)  # type: ignore[call-arg]  # the typo under test


def test_the_jobs_spec_carries_every_model_option_of_its_config() -> None:
    config = SegmentConfig(
        input="in/", output="out/", variant="lite", weights="random", resolution="96x64", backend="torch",
        batch_size=3, cpu_threads=2, compile=True, compile_scope="backbone", channels_last=True, tf32=True,
        onnx_cache="/tmp/onnx", engine_cache="/tmp/trt", s3_region="eu-west-1",
    )  # fmt: skip
    spec = replica_spec(Runtime(config, "run", "cpu", "bfloat16", 0.0))
    assert spec == ReplicaSpec(
        weights="random", variant="lite", device="cpu", dtype="bfloat16", s3=config.s3, size=Size(64, 96),
        sha256=None, backend="torch", onnx_cache="/tmp/onnx", engine_cache="/tmp/trt", batch_size=3,
        cpu_threads=2, compile=True, compile_scope="backbone", cuda_graphs=False, tf32=True, channels_last=True,
    )  # fmt: skip
    assert pickle.loads(pickle.dumps(spec)) == spec, "it travels to Ray actors as it is"


@pytest.mark.parametrize("config_type", [PredictConfig, ServeConfig])
def test_predict_and_serve_build_the_same_spec_from_their_configs(config_type: type) -> None:
    extra = {"images": ["x.jpg"], "output": "out/"} if config_type is PredictConfig else {}
    config = config_type(variant="lite", weights="random", resolution="64", **extra)
    spec = ReplicaSpec.of(config, device="cpu", dtype="float32", batch_size=2)
    assert (spec.weights, spec.variant, spec.size, spec.batch_size) == ("random", "lite", Size(64, 64), 2)

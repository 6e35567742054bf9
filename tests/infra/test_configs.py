import importlib
from pathlib import Path

import pytest
import yaml

from jobs.common.cli import build_config
from jobs.segment.config import SegmentConfig

INFRA = Path(__file__).resolve().parents[2] / "infra"


@pytest.mark.parametrize("path", sorted(INFRA.glob("examples/*.yaml")), ids=lambda p: p.name)
def test_example_job_configs_validate(path):
    config = build_config(SegmentConfig, yaml.safe_load(path.read_text()))
    assert config.input and config.output


def test_kuberay_job_runs_the_segmentation_entrypoint_with_an_existing_config():
    job = yaml.safe_load((INFRA / "kuberay" / "rayjob.yaml").read_text())
    entrypoint = job["spec"]["entrypoint"]
    assert entrypoint.startswith("python -m jobs.segment")
    config = entrypoint.split("--config ")[1].removeprefix("/app/")
    assert (INFRA.parent / config).is_file()


def test_cluster_launcher_config_parses():
    cluster = yaml.safe_load((INFRA / "cluster.yaml").read_text())
    assert cluster["head_node_type"] in cluster["available_node_types"]


def _pins() -> dict[str, str]:
    lines = (INFRA / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_the_image_installs_the_torch_and_ray_the_tests_ran_on():
    import ray
    import torch
    import torchvision

    assert _pins() == {
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
    }
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "-c infra/constraints.txt" in dockerfile
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile


def _serve_configs() -> dict[str, dict]:
    rayservice = yaml.safe_load((INFRA / "kuberay" / "rayservice.yaml").read_text())
    return {
        "serve/birefnet.yaml": yaml.safe_load((INFRA / "serve" / "birefnet.yaml").read_text()),
        "kuberay/rayservice.yaml": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", sorted(_serve_configs()))
def test_serve_configs_are_valid_serve_schemas_that_build_the_application(name):
    from ray.serve.schema import ServeDeploySchema

    from jobs.serve.config import ServeConfig

    schema = ServeDeploySchema.model_validate(_serve_configs()[name])
    (app,) = schema.applications
    assert app.import_path == "jobs.serve:build_app"
    module, attribute = app.import_path.split(":")
    builder = getattr(importlib.import_module(module), attribute)
    application = builder(app.args)
    assert type(application).__name__ == "Application"
    assert build_config(ServeConfig, app.args).max_replicas >= 1

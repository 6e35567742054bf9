"""The service as operators start it: `serve deploy` of the shipped config file onto a running
cluster (`ray start --head`), answering HTTP, with its metrics in the node's Prometheus export."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from connectors.synthetic import encode_image, object_scene
from tests.support.ports import free_ports
from tests.support.ray_cluster import local_ray_cluster

#: A `ray start --head` cluster and `serve deploy` of the config file: about 40 s.
pytestmark = pytest.mark.slow

SERVE_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "serve" / "birefnet.yaml"


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=10)
    except requests.ConnectionError:
        return None


def _serve_cli(cluster, *args: str) -> subprocess.CompletedProcess:
    """The `serve` command line against the cluster's dashboard."""
    command = [
        sys.executable,
        "-c",
        "from ray.serve.scripts import cli; cli()",
        *args,
        "--address",
        cluster.address,
    ]
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=120, check=False)


def test_serve_deploy_of_the_config_file_serves_and_exports_metrics(tmp_path):
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    (port,) = free_ports(1)
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config["proxy_location"] = "HeadOnly"
    small = {"variant": "demo", "device": "cpu", "min_replicas": 1, "max_replicas": 1,
             "cpus_per_replica": 1, "ingress_replicas": 1, "cpus_per_ingress": 0.5}  # fmt: skip
    config["applications"][0]["args"].update(small)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"

    with local_ray_cluster(tmp_path / "cluster") as cluster:
        deploy = _serve_cli(cluster, "deploy", str(path))
        assert deploy.returncode == 0, deploy.stderr[-3000:]
        health = _wait_for(lambda: (r := _get(f"{url}/healthz")) is not None and r.ok and r, 240, "/healthz")
        assert health.json()["variant"] == "demo"

        image = object_scene(64, 48, 1)
        answer = requests.post(f"{url}/v1/segment", data=encode_image(image), timeout=120)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert requests.post(f"{url}/v1/segment", data=b"junk", timeout=60).status_code == 422
        assert Image.open(io.BytesIO(answer.content)).size == image.size

        def exported() -> str | None:
            page = _get(f"http://127.0.0.1:{cluster.metrics_port}/metrics")
            text = page.text if page is not None and page.ok else ""
            return text if "birefnet_serve_requests" in text and "birefnet_serve_batch_size" in text else None

        metrics = _wait_for(exported, 90, "the service's metrics in the Prometheus export")
        requests_line = [
            line for line in metrics.splitlines() if line.startswith("ray_birefnet_serve_requests")
        ]
        assert any('status="200"' in line for line in requests_line), requests_line
        assert any('status="422"' in line for line in requests_line), requests_line
        assert "ray_birefnet_serve_request_seconds_bucket" in metrics
        # Without its (detached) Serve actors the head stops at once rather than after its grace period.
        assert _serve_cli(cluster, "shutdown", "--yes").returncode == 0

"""Ray actors that reserve one GPU or half of one see a CUDA device (Ray sets
CUDA_VISIBLE_DEVICES for them). Skipped without CUDA."""

import pytest
import ray

pytestmark = pytest.mark.gpu


@ray.remote
class _DeviceProbe:
    def report(self) -> dict:
        import os

        import torch

        return {
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "available": torch.cuda.is_available(),
            "count": torch.cuda.device_count(),
            "ran": float(torch.ones(2, device="cuda").sum().item()),
        }


@pytest.mark.parametrize("gpus", [1.0, 0.5], ids=["whole", "half"])
def test_an_actor_with_a_gpu_share_sees_its_device(embedded_ray, gpus):
    assert ray.cluster_resources().get("GPU", 0) >= 1, "Ray found no GPU on this CUDA machine"
    probes = [_DeviceProbe.options(num_gpus=gpus, num_cpus=0).remote() for _ in range(int(1 / gpus))]
    try:
        for report in ray.get([probe.report.remote() for probe in probes]):
            assert report["available"] and report["count"] == 1 and report["visible"] != ""
            assert report["ran"] == 2.0
    finally:
        for probe in probes:
            ray.kill(probe)

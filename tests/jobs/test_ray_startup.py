"""`choose_device`: --device auto asks an autoscaling cluster for a GPU instead of judging by the
nodes that happen to be up; explicit settings are taken as given."""

import logging
import time

import pytest

from jobs.common import ray_startup
from jobs.common.ray_startup import Needs, ResourceError, choose_device, ensure_resources


def test_explicit_devices_and_gpu_reservations_decide_without_asking():
    assert choose_device("cpu", embedded=False, gpus_per_actor=None, wait_s=60) == "cpu"
    assert choose_device("cuda", embedded=True, gpus_per_actor=None, wait_s=60) == "cuda"
    assert choose_device("auto", embedded=False, gpus_per_actor=0.5, wait_s=60) == "cuda"
    assert choose_device("auto", embedded=False, gpus_per_actor=0, wait_s=60) == "cpu"


def test_an_embedded_ray_without_gpus_runs_on_cpu_at_once(embedded_ray):
    started = time.monotonic()
    assert choose_device("auto", embedded=True, gpus_per_actor=None, wait_s=60) == "cpu"
    assert time.monotonic() - started < 5


def test_a_cluster_without_gpus_is_asked_for_one_then_cpu_after_the_wait(embedded_ray, caplog):
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="jobs.common.ray_startup"):
        assert choose_device("auto", embedded=False, gpus_per_actor=None, wait_s=0.5) == "cpu"
    assert time.monotonic() - started >= 0.5
    assert "asked for one" in caplog.text and "no GPU node joined" in caplog.text


def test_a_gpu_node_that_joins_during_the_wait_is_used(embedded_ray, monkeypatch):
    readings = iter([0, 0, 1])
    monkeypatch.setattr(ray_startup, "_gpus", lambda: next(readings))
    monkeypatch.setattr(ray_startup, "_POLL_S", 0.05)
    assert choose_device("auto", embedded=False, gpus_per_actor=None, wait_s=30) == "cuda"
    with pytest.raises(StopIteration):
        next(readings)


def test_a_cluster_short_of_cpus_is_asked_and_given_the_wait_before_the_refusal(embedded_ray, caplog):
    ensure_resources(Needs(cpus=1, what="one actor"), embedded=False, wait_s=30)  # enough: no wait
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="jobs.common.ray_startup"),
        pytest.raises(ResourceError) as err,
    ):
        ensure_resources(Needs(cpus=64, what="64 actors"), embedded=False, wait_s=0.5)
    assert time.monotonic() - started >= 0.5
    assert "waiting up to" in caplog.text
    assert "the cluster cannot run this job" in str(err.value) and "add nodes" in str(err.value)

"""``embedded_ray``: a small in-process local Ray (``ray.init``) for the whole test session.

A pytest plugin, registered in ``tests/conftest.py``.

Ray 2.60 turns token auth on by default for a new local ``ray.init()`` when ``RAY_AUTH_MODE`` is
unset: it then sets ``RAY_AUTH_MODE=token`` in ``os.environ`` and, if no token exists, writes one
to ``~/.ray/auth_token``. A private, loopback-only test cluster needs neither, so the fixture sets
``RAY_AUTH_MODE=disabled`` for its lifetime and restores the environment afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ray_cluster import kill_processes_with_env

EMBEDDED_NUM_CPUS = 2
EMBEDDED_OBJECT_STORE_BYTES = 192 * 1024**2


def _refresh_ray_config() -> None:
    """Re-read RAY_* variables into Ray's cached C++ config (auth mode is cached at first use)."""
    from ray._raylet import Config

    Config.initialize("")


@pytest.fixture(scope="session")
def embedded_ray() -> Iterator[Any]:
    """A fresh local Ray with 2 CPUs, ~192 MiB object store, no dashboard and no auth token.

    Yields the ``ray.init`` context (``.address_info`` etc.); tasks and Datasets in the tests use
    it through the global ``ray`` API.
    """
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        pytest.fail("ray is already initialized in this process; embedded_ray must start it")

    # Short path: Ray's unix socket paths must stay under ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rayt-", dir="/tmp")
    # Inherited by every process Ray starts: finds leftovers after ray.shutdown(), if any.
    marker = f"RAY_TEST_EMBEDDED_ID={uuid.uuid4().hex}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(*marker.split("=", 1))
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            mp.delenv(name, raising=False)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # Node IP 127.0.0.1 instead of the host's routable address: the constant is read at
        # import (already done here), the variable is for the processes Ray spawns.
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        _refresh_ray_config()
        try:
            context = ray.init(
                address="local",  # never attach to a cluster found via RAY_ADDRESS or /tmp/ray
                num_cpus=EMBEDDED_NUM_CPUS,
                num_gpus=0,
                object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
                include_dashboard=False,
                _temp_dir=temp_dir,
                logging_level="warning",
            )
            yield context
        finally:
            ray.shutdown()
            kill_processes_with_env(marker, cmdline_contains="ray")
            shutil.rmtree(temp_dir, ignore_errors=True)
    _refresh_ray_config()  # back to the restored environment's auth mode

"""Smoke test: a real `ray start --head` cluster runs a job shipped with `ray job submit --working-dir`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.support.ray_cluster import local_ray_cluster, submit_and_wait

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # starts and tears down a `ray start --head` cluster

# `jobs` must come from the uploaded working dir (first on the driver's sys.path), not the
# editable install pointing at the checkout; sys.executable shows the job runs in the venv;
# the driver's cwd is the unpacked working dir, which must not contain .venv (6 GB) or .git.
ENTRYPOINT = (
    'python -c "import os, sys, ray, jobs; ray.init(); '
    "print('JOBS_FROM', jobs.__file__); print('PYTHON', sys.executable); "
    "print('SHIPPED_VENV', os.path.exists('.venv'), os.path.exists('.git')); "
    'print(ray.cluster_resources())"'
)


def test_job_submit_with_working_dir(tmp_path: Path) -> None:
    started = time.monotonic()
    with local_ray_cluster(tmp_path) as cluster:
        up = time.monotonic()
        status, logs = submit_and_wait(cluster, ENTRYPOINT, working_dir=REPO_ROOT, timeout=60)
        done = time.monotonic()
    print(
        f"ray cluster up in {up - started:.1f}s, job {done - up:.1f}s, "
        f"teardown {time.monotonic() - done:.1f}s; job logs:\n{logs}"
    )

    assert status == "SUCCEEDED", logs
    assert "CPU" in logs, logs
    lines = logs.splitlines()
    jobs_line = next(line for line in lines if line.startswith("JOBS_FROM "))
    assert "working_dir_files" in jobs_line, jobs_line  # imported from the uploaded package
    python_line = next(line for line in lines if line.startswith("PYTHON "))
    assert str(Path(sys.executable).parent) in python_line, python_line
    assert "SHIPPED_VENV False False" in lines, logs

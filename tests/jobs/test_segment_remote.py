"""The job as users run it: a separate process on S3, and `ray job submit` on a real cluster."""

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from connectors.manifest import read_manifest
from connectors.storage import S3Options
from tests.support.job_corpus import BAD, GOOD, SMOKE_FLAGS, corpus_files, expected_size, write_corpus
from tests.support.ray_cluster import local_ray_cluster, submit_and_wait

#: Every test starts Ray of its own: a job process with an embedded Ray, or a `ray start --head` cluster.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_FLAGS = [*SMOKE_FLAGS, "--max-failure-fraction", "0.5"]


def _run_job(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.segment", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _s3_env(server, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(AWS_ACCESS_KEY_ID=server.key, AWS_SECRET_ACCESS_KEY=secret, AWS_EC2_METADATA_DISABLED="true")
    return env


def _s3_flags(server, bucket: str) -> list[str]:
    """The job reads `photos/` and writes `results/` in the bucket on the test server."""
    return [
        "--input",
        f"s3://{bucket}/photos",
        "--output",
        f"s3://{bucket}/results",
        "--s3-endpoint-url",
        server.endpoint_url,
    ]


def test_s3_to_s3(s3_server, s3_bucket):
    fs = s3_server.filesystem()
    for name, data in corpus_files().items():
        fs.pipe(f"{s3_bucket}/photos/{name}", data)
    result = _run_job(
        [
            *_s3_flags(s3_server, s3_bucket),
            "--num-cpus",
            "2",
            "--object-store-memory",
            "150000000",
            *JOB_FLAGS,
        ],
        _s3_env(s3_server, s3_server.secret),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(GOOD)} ok, {len(BAD)} failed" in result.stdout
    for name in GOOD:
        key = f"{s3_bucket}/results/masks/{Path(name).with_suffix('.png').as_posix()}"
        h, w = expected_size(name)
        assert Image.open(io.BytesIO(fs.cat(key))).size == (w, h), name
    s3 = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret=s3_server.secret)
    assert read_manifest(f"s3://{s3_bucket}/results", s3).num_rows == len(GOOD) + len(BAD)
    written = fs.find(f"{s3_bucket}/results/masks")
    assert len(written) == len(GOOD)


def test_wrong_secret_fails_with_a_clear_error(s3_server, s3_bucket):
    s3_server.filesystem().pipe(f"{s3_bucket}/photos/a.jpg", corpus_files()["a.jpg"])
    result = _run_job(
        [
            *_s3_flags(s3_server, s3_bucket),
            *JOB_FLAGS,
        ],
        _s3_env(s3_server, "not-the-secret"),
    )
    assert result.returncode == 2
    assert "credentials were rejected" in result.stderr and s3_bucket in result.stderr
    assert "Traceback" not in result.stderr


#: Before the job, what the driver sees: `jobs` from the uploaded working dir (first on the driver's
#: sys.path), not the editable install pointing at the checkout; the venv's Python; and a working
#: dir without .venv (gigabytes) or .git.
SHIPPED = (
    "import os, sys, jobs; print('JOBS_FROM', jobs.__file__); print('PYTHON', sys.executable); "
    "print('SHIPPED_VENV', os.path.exists('.venv'), os.path.exists('.git'))"
)


def test_ray_job_submit_on_a_cluster(tmp_path):
    """`ray job submit --working-dir .` on a real `ray start --head` cluster, as the docs show."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_corpus(src)
    job = " ".join(["python -m jobs.segment", "--input", str(src), "--output", str(out), *JOB_FLAGS])
    with local_ray_cluster(tmp_path) as cluster:
        entrypoint = shlex.join(["sh", "-c", f"python -c {shlex.quote(SHIPPED)} && {job}"])
        status, logs = submit_and_wait(cluster, entrypoint, working_dir=REPO_ROOT, timeout=300)
    assert status == "SUCCEEDED", logs
    lines = logs.splitlines()
    jobs_line = next(line for line in lines if line.startswith("JOBS_FROM "))
    assert "working_dir_files" in jobs_line, jobs_line  # imported from the uploaded package
    python_line = next(line for line in lines if line.startswith("PYTHON "))
    assert str(Path(sys.executable).parent) in python_line, python_line
    assert "SHIPPED_VENV False False" in lines, logs
    assert f"{len(GOOD)} ok, {len(BAD)} failed" in logs
    for name in GOOD:
        h, w = expected_size(name)
        assert Image.open(out / "masks" / Path(name).with_suffix(".png")).size == (w, h)
    assert read_manifest(str(out)).num_rows == len(GOOD) + len(BAD)

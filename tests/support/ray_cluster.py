"""A real, throwaway local Ray cluster for tests: ``ray start --head`` plus ``ray job submit``.

Not a conftest: import ``local_ray_cluster`` and ``submit_and_wait`` from here.

How it stays isolated from a developer's (or a benchmark's) own Ray:

* Token auth (Ray 2.60): the token is a fresh ``secrets.token_hex(32)`` (what
  ``ray get-auth-token --generate`` makes) passed as ``RAY_AUTH_TOKEN`` together with
  ``RAY_AUTH_MODE=token`` in the environment of ``ray start`` and of every ``ray job`` CLI call.
  Ray's token loader prefers ``RAY_AUTH_TOKEN`` over ``RAY_AUTH_TOKEN_PATH`` over
  ``~/.ray/auth_token``, so ``~/.ray`` is neither read nor written. The raylet passes the
  environment on to the job supervisor and the job driver, so ``ray.init()`` inside a job
  authenticates too.
* Its own ``--temp-dir`` (a short ``/tmp/rayt-*`` path: Ray's unix socket paths must stay under
  ~107 bytes, pytest's ``tmp_path`` is too long), so ``ray_current_cluster`` is written there and
  never makes someone else's ``ray.init()`` attach to this cluster.
* Every port explicitly chosen free (GCS, dashboard, dashboard agent, runtime-env agent, metrics,
  ray client server, raylet/object manager); worker ports are OS-assigned (0..0).
* Node IP 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; Ray otherwise rewrites 127.0.0.1 to
  the host's routable address and talks to itself over it).
* Shutdown never uses ``ray stop``: it kills *every* Ray process on the machine. The head runs as
  ``ray start --block`` in its own session; SIGTERM makes it drain and stop its own children,
  then its process group and anything else whose environment holds this cluster's token (job
  drivers run in sessions of their own) get SIGKILL.

``ray job submit`` (and so the dashboard) needs ``ray[default]``; without it ``ray start`` fails
with "Cannot include dashboard with missing packages" and ``dashboard_missing_reason()`` says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports

START_TIMEOUT_S = 90.0
STOP_GRACE_S = 40.0
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

# Never ship these with --working-dir, whatever .gitignore / RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES
# say (the repo's .venv is ~6 GB). gitwildmatch patterns, relative to the working dir.
WORKING_DIR_EXCLUDES = (
    ".venv",
    "venv",
    ".git",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "demo_input",
    "demo_output",
)

# Inherited variables that would point the CLI or the cluster somewhere else, or change what
# a working_dir upload leaves out.
_SCRUBBED_ENV = (
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES",
    "RAY_RUNTIME_ENV_IGNORE_GITIGNORE",
    "RAY_TEST_EMBEDDED_ID",  # the embedded_ray fixture's marker for its own processes
)


@dataclass
class ClusterInfo:
    """A running local Ray head node and what a client needs to reach it."""

    address: str  # job server / dashboard, e.g. http://127.0.0.1:PORT
    gcs_address: str  # 127.0.0.1:PORT, for ray.init(address=...)
    env: dict[str, str]  # full environment for `ray job ...` CLI calls (address + token)
    token: str
    temp_dir: Path
    pid: int  # the `ray start --block` process
    log_path: Path
    startup_s: float = 0.0
    metrics_port: int = 0  # Prometheus metrics of the node (--metrics-export-port)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def dashboard_missing_reason() -> str | None:
    """Why the job server cannot start in this venv (missing ray[default] deps), or None."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError as exc:
        return f"ray[default] is not installed ({exc}); `ray job submit` needs the dashboard"
    return None


def ray_cli() -> list[str]:
    """The ray CLI of this interpreter; ``-m`` avoids depending on the venv script's shebang."""
    return [sys.executable, "-m", "ray.scripts.scripts"]


def cluster_env(token: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for `ray start` and `ray job` CLI calls: token auth, the venv first on PATH."""
    env = dict(os.environ if base is None else base)
    for name in _SCRUBBED_ENV:
        env.pop(name, None)
    # The job entrypoint's `python` is looked up on the raylet's PATH: put this interpreter's
    # bin dir (the venv's, not resolved through the symlink) first so jobs run in the same venv.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # node IP 127.0.0.1 (single-node only)
        PYTHONUNBUFFERED="1",
    )
    return env


def _http_get(url: str, token: str, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def _wait_until_ready(proc: subprocess.Popen[bytes], address: str, token: str, log_path: Path) -> None:
    """Block until the job server lists jobs with our token (the dashboard port opens earlier)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"`ray start --head` exited with code {proc.returncode}; log:\n{_tail(log_path)}"
            )
        try:
            status, body = _http_get(f"{address}/api/jobs/", token, timeout=2.0)
            if status == 200:
                return
            last = (status, body[:200])
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise RuntimeError(
        f"Ray job server at {address} not ready after {START_TIMEOUT_S:.0f}s ({last!r}); "
        f"log:\n{_tail(log_path)}"
    )


def pids_with_env(entry: str, *, cmdline_contains: str | None = None) -> list[int]:
    """Live processes (not this one) whose environment holds ``entry`` ("NAME=value").

    Every process a Ray node starts inherits its environment, so a per-cluster value finds them
    all, including workers renamed ``ray::...`` and job drivers that run in their own session.
    """
    found = []
    needle = entry.encode() + b"\0"
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            environ = (proc_dir / "environ").read_bytes() + b"\0"
            if not (environ.startswith(needle) or b"\0" + needle in environ):
                continue
            if cmdline_contains is not None and (
                cmdline_contains.encode() not in (proc_dir / "cmdline").read_bytes()
            ):
                continue
        except OSError:  # gone, or a zombie
            continue
        found.append(int(proc_dir.name))
    return found


def kill_processes_with_env(
    entry: str, *, cmdline_contains: str | None = None, timeout: float = 10.0
) -> list[int]:
    """SIGKILL every process that :func:`pids_with_env` finds, until none is left or timeout."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while (pids := pids_with_env(entry, cmdline_contains=cmdline_contains)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                if pid not in killed:
                    killed.append(pid)
        time.sleep(0.2)
    return killed


def _stop(proc: subprocess.Popen[bytes], token: str) -> None:
    """Stop only this cluster: graceful SIGTERM to `ray start --block`, then SIGKILL leftovers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)  # Ray drains, then stops the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its session: gcs, raylet, dashboard, workers
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    # Job drivers run in sessions of their own; the token is unique to this cluster.
    kill_processes_with_env(f"RAY_AUTH_TOKEN={token}")


_PORT_NAMES = (
    "gcs",
    "dashboard",
    "agent_http",
    "agent_grpc",
    "runtime_env_agent",
    "metrics",
    "client_server",
    "node_manager",
    "object_manager",
)


def _start_command(
    temp_dir: Path, ports: dict[str, int], num_cpus: int, object_store_memory: int
) -> list[str]:
    return [
        *ray_cli(),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={ports['gcs']}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--ray-client-server-port={ports['client_server']}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        "--min-worker-port=0",  # 0..0: OS-assigned, no clash with another cluster's 10002-19999
        "--max-worker-port=0",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--object-store-memory={object_store_memory}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--log-style=record",
        "--log-color=false",
    ]


@contextlib.contextmanager
def local_ray_cluster(
    tmp_path: Path,
    *,
    num_cpus: int = 2,
    object_store_memory: int = 200 * 1024**2,
    keep_logs: bool = True,
    attempts: int = 2,
) -> Iterator[ClusterInfo]:
    """Start a token-authenticated single-node Ray cluster with a job server; stop it on exit.

    ``tmp_path`` receives the `ray start` log and, if ``keep_logs``, a copy of the session logs.
    A start that fails (say a chosen port got taken meanwhile) is retried with new ports.
    """
    reason = dashboard_missing_reason()
    if reason is not None:
        raise RuntimeError(reason)

    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        temp_dir = Path(tempfile.mkdtemp(prefix="rayt-", dir="/tmp"))
        token = secrets.token_hex(32)
        env = cluster_env(token)
        ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        address = f"http://127.0.0.1:{ports['dashboard']}"
        log_path = tmp_path / f"ray-start-{attempt}.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                _start_command(temp_dir, ports, num_cpus, object_store_memory),
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until_ready(proc, address, token, log_path)
        except BaseException:
            _stop(proc, token)
            shutil.rmtree(temp_dir, ignore_errors=True)
            if attempt == attempts:
                raise
            continue
        break

    try:
        yield ClusterInfo(
            address=address,
            gcs_address=f"127.0.0.1:{ports['gcs']}",
            env={**env, "RAY_API_SERVER_ADDRESS": address},
            token=token,
            temp_dir=temp_dir,
            pid=proc.pid,
            log_path=log_path,
            startup_s=time.monotonic() - started,
            metrics_port=ports["metrics"],
        )
    finally:
        _stop(proc, token)
        if keep_logs:
            with contextlib.suppress(OSError):
                shutil.copytree(temp_dir / "session_latest" / "logs", tmp_path / "ray-logs")
        shutil.rmtree(temp_dir, ignore_errors=True)


def job_status(info: ClusterInfo, submission_id: str) -> str:
    status, body = _http_get(f"{info.address}/api/jobs/{submission_id}", info.token)
    if status != 200:
        raise RuntimeError(f"job status query failed: HTTP {status}: {body[:500]!r}")
    return json.loads(body)["status"]


def job_logs(info: ClusterInfo, submission_id: str, timeout: float = 60.0) -> str:
    """The job driver's output, through `ray job logs` (with --log-style record: no colors)."""
    result = subprocess.run(
        [*ray_cli(), "job", "logs", "--address", info.address, "--log-style=record", submission_id],
        env=info.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`ray job logs` failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def submit_and_wait(
    info: ClusterInfo,
    entrypoint: str,
    working_dir: str | os.PathLike[str],
    timeout: float,
    *,
    excludes: tuple[str, ...] = WORKING_DIR_EXCLUDES,
    poll_s: float = 0.5,
) -> tuple[str, str]:
    """Submit ``entrypoint`` with ``ray job submit --working-dir`` and wait for a terminal status.

    ``entrypoint`` is a shell-style command line (split with ``shlex``); its ``python`` is the
    venv's, since the cluster was started with the venv's bin dir first on PATH.

    Returns ``(status, logs)`` with status SUCCEEDED, FAILED or STOPPED. Past ``timeout`` seconds
    the job is stopped and ``TimeoutError`` raised (with the logs so far).
    """
    working_dir = str(Path(working_dir).resolve())
    submission_id = f"test-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + timeout
    command = [
        *ray_cli(),
        "job",
        "submit",
        "--address",
        info.address,
        "--submission-id",
        submission_id,
        "--working-dir",
        working_dir,
        "--runtime-env-json",
        json.dumps({"excludes": list(excludes)}),
        "--no-wait",
        "--log-style=record",
        "--log-color=false",
        "--",
        # The CLI shell-quotes and joins its arguments: hand it the words, not one string.
        *shlex.split(entrypoint),
    ]
    try:
        submitted = subprocess.run(
            command,
            env=info.env,
            cwd=working_dir,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"`ray job submit` did not return within {timeout:.0f}s") from exc
    if submitted.returncode != 0:
        raise RuntimeError(
            f"`ray job submit` failed ({submitted.returncode}):\n"
            f"{submitted.stdout[-4000:]}\n{submitted.stderr[-4000:]}"
        )

    status = "PENDING"
    while time.monotonic() < deadline:
        status = job_status(info, submission_id)
        if status in TERMINAL_STATUSES:
            return status, job_logs(info, submission_id)
        time.sleep(poll_s)

    with contextlib.suppress(Exception):
        subprocess.run(
            [*ray_cli(), "job", "stop", "--address", info.address, "--no-wait", submission_id],
            env=info.env,
            capture_output=True,
            timeout=30,
            check=False,
        )
    logs = ""
    with contextlib.suppress(Exception):
        logs = job_logs(info, submission_id, timeout=30)
    raise TimeoutError(
        f"job {submission_id} still {status} after {timeout:.0f}s; logs so far:\n{logs[-4000:]}"
    )

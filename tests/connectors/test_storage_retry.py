"""Transient storage faults are retried for ``S3Options.retry_seconds``; a longer outage is one clear error.

The policy is tested on a fake clock (milliseconds per test), the storage functions on a flaky
in-memory filesystem, and the whole path against a SeaweedFS that is killed and restarted.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import pickle
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import fsspec
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from pydantic import ValidationError
from s3fs.errors import translate_boto_error

from connectors import raster, retry, storage
from connectors.retry import RetryPolicy, is_transient
from connectors.storage import (
    S3Options,
    StorageAuthError,
    StorageUnavailableError,
    exists,
    file_info,
    list_files,
    open_input,
    read_bytes,
    write_bytes_atomic,
)

if TYPE_CHECKING:
    from tests.support.seaweedfs import SeaweedFS

ENDPOINT = "http://s3.test:8333"


def _client_error(code: str, status: int, operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def _caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


TRANSIENT = {
    "endpoint down": EndpointConnectionError(endpoint_url=f"{ENDPOINT}/b/x.jpg"),
    "connect timeout": ConnectTimeoutError(endpoint_url=ENDPOINT),
    "read timeout (paused store)": ReadTimeoutError(endpoint_url=ENDPOINT),
    "connection closed": ConnectionClosedError(endpoint_url=ENDPOINT),
    "refused": ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
    "reset": ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    "host unreachable": OSError(errno.EHOSTUNREACH, "No route to host"),
    "socket timeout": TimeoutError("timed out"),
    "aiohttp disconnected": aiohttp.ServerDisconnectedError(),
    "aiohttp payload": aiohttp.ClientPayloadError("Response payload is not completed"),
    "SlowDown": _client_error("SlowDown", 503, "PutObject"),
    "Throttling": _client_error("Throttling", 400),
    "ThrottlingException": _client_error("ThrottlingException", 400),
    "RequestLimitExceeded": _client_error("RequestLimitExceeded", 400),
    "InternalError": _client_error("InternalError", 500),
    "bare 503 of a HEAD": _client_error("503", 503, "HeadObject"),
    "502 with an unknown code": _client_error("BadGateway", 502),
    "504": _client_error("GatewayTimeout", 504),
    "s3fs-translated 503": translate_boto_error(_client_error("ServiceUnavailable", 503)),
    "s3fs-translated Throttling": translate_boto_error(_client_error("Throttling", 400)),
    "s3fs-translated RequestTimeout": translate_boto_error(_client_error("RequestTimeout", 400)),
    "wrapped refusal": _caused(RuntimeError("wrapped"), ConnectionRefusedError(errno.ECONNREFUSED, "x")),
}

PERMANENT = {
    "missing": FileNotFoundError(errno.ENOENT, "No such file", "s3://b/x"),
    "s3fs-translated NoSuchKey": translate_boto_error(_client_error("NoSuchKey", 404)),
    "denied": PermissionError("AccessDenied"),
    "s3fs-translated 403": translate_boto_error(_client_error("403", 403, "HeadObject")),
    "rejected credentials": StorageAuthError(errno.EACCES, "rejected", "s3://b/x"),
    "bare ClientError 403": _client_error("AccessDenied", 403),
    "not implemented": _client_error("NotImplemented", 501),
    "no credentials": NoCredentialsError(),
    "bad argument": ValueError("bad"),
    "plain I/O error": OSError(errno.EIO, "disk error"),
    "bug": KeyError("x"),
    "certificate": aiohttp.ClientConnectorCertificateError(None, ValueError("cert")),  # type: ignore[arg-type]
    "denied after a reset": _caused(PermissionError("denied"), ConnectionResetError()),
    "already retried": _caused(StorageUnavailableError("gave up"), ConnectionRefusedError()),
}


@pytest.mark.parametrize("exc", TRANSIENT.values(), ids=list(TRANSIENT))
def test_transient_errors_are_retryable(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT.values(), ids=list(PERMANENT))
def test_permanent_errors_are_not_retryable(exc: BaseException) -> None:
    assert not is_transient(exc)


class FakeTime:
    """A clock that only moves when the policy sleeps or an attempt says it took time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def _policy(fake: FakeTime, window_s: float, **kwargs: Any) -> RetryPolicy:
    return RetryPolicy(window_s=window_s, clock=fake.clock, sleep=fake.sleep, **kwargs)


def _failing(fake: FakeTime, exc: BaseException, failures: float, took_s: float = 0.0) -> Callable[[], str]:
    """An operation that takes ``took_s`` per attempt and fails its first ``failures`` attempts."""
    calls = Counter[str]()

    def operation() -> str:
        calls["n"] += 1
        fake.now += took_s
        if calls["n"] <= failures:
            raise exc
        return f"ok after {calls['n']}"

    operation.calls = calls  # type: ignore[attr-defined]
    return operation


def test_backoff_doubles_from_half_a_second_and_is_capped() -> None:
    ceilings = RetryPolicy(window_s=60, uniform=lambda low, high: high)
    assert [ceilings.delay(attempt) for attempt in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert ceilings.delay(10_000) == 8.0


def test_backoff_is_fully_jittered() -> None:
    policy = RetryPolicy(window_s=60, uniform=random.Random(7).uniform)
    for attempt in range(12):
        delays = [policy.delay(attempt) for _ in range(200)]
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert min(delays) < 0.2 * ceiling and max(delays) > 0.8 * ceiling  # spread over [0, ceiling]


def test_transient_failures_shorter_than_the_window_are_retried_away() -> None:
    fake = FakeTime()
    operation = _failing(fake, EndpointConnectionError(endpoint_url=ENDPOINT), failures=5, took_s=3.0)

    assert _policy(fake, 120).call(operation, store="S3", action="reading x") == "ok after 6"
    assert len(fake.sleeps) == 5


def test_outage_longer_than_the_window_is_one_clear_error() -> None:
    fake = FakeTime()
    down = EndpointConnectionError(endpoint_url=f"{ENDPOINT}/b/x.jpg")
    operation = _failing(fake, down, failures=math.inf, took_s=1.0)
    started = fake.now

    with pytest.raises(StorageUnavailableError) as info:
        _policy(fake, 30).call(operation, store=f"S3 at {ENDPOINT}", action="reading s3://b/x.jpg")

    waited = fake.now - started
    assert 30 <= waited <= 31  # retried for the whole window, then one last attempt
    assert max(fake.sleeps) <= 8.0
    assert info.value.__cause__ is down
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"S3 at {ENDPOINT} unreachable for {waited:.0f} s while reading s3://b/x.jpg")
    assert "(EndpointConnectionError: Could not connect to the endpoint URL" in message
    assert message.endswith("is the store up?")
    assert isinstance(info.value, OSError)


def test_the_error_names_the_transient_cause_not_its_s3fs_wrapper() -> None:
    fake = FakeTime()
    operation = _failing(fake, translate_boto_error(_client_error("SlowDown", 503)), failures=math.inf)
    with pytest.raises(StorageUnavailableError, match=r"\(ClientError: An error occurred \(SlowDown\)"):
        _policy(fake, 5).call(operation, store="S3", action="writing s3://b/y")


def test_permanent_errors_are_raised_at_once() -> None:
    fake = FakeTime()
    missing = FileNotFoundError("s3://b/x")
    operation = _failing(fake, missing, failures=math.inf)
    with pytest.raises(FileNotFoundError) as info:
        _policy(fake, 120).call(operation, store="S3", action="reading s3://b/x")
    assert info.value is missing
    assert operation.calls["n"] == 1  # type: ignore[attr-defined]
    assert fake.sleeps == []


def test_zero_window_tries_once() -> None:
    fake = FakeTime()
    operation = _failing(fake, ConnectionRefusedError(), failures=math.inf)
    with pytest.raises(StorageUnavailableError, match="unreachable for 0 s"):
        _policy(fake, 0).call(operation, store="S3", action="reading s3://b/x")
    assert operation.calls["n"] == 1  # type: ignore[attr-defined]


def test_retries_warn_at_most_every_ten_seconds(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    operation = _failing(fake, ConnectionRefusedError(), failures=math.inf, took_s=0.1)
    with caplog.at_level(logging.WARNING, logger=retry.__name__), pytest.raises(StorageUnavailableError):
        _policy(fake, 60, uniform=lambda low, high: low).call(
            operation, store="S3", action="reading s3://b/x"
        )

    warnings = [r for r in caplog.records if r.name == retry.__name__]
    attempts = operation.calls["n"]  # type: ignore[attr-defined]
    assert attempts > 100  # zero jitter: back-to-back attempts
    assert 1 <= len(warnings) <= 7
    assert all(r.levelno == logging.WARNING and "reading s3://b/x" in r.getMessage() for r in warnings)


class FlakyFilesystem:
    """A memory filesystem whose every method fails ``failures`` times first, like an S3 store restarting."""

    def __init__(self, failures: int, exc: BaseException) -> None:
        self.inner = fsspec.filesystem("memory")
        self.failures = failures
        self.exc = exc
        self.calls = Counter[str]()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self.calls[name] <= self.failures:
                raise self.exc
            return method(*args, **kwargs)

        return call


@pytest.fixture
def flaky_s3(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, BaseException], FlakyFilesystem]:
    """Serve ``s3://`` URIs from a flaky memory filesystem, with the policy on a fake clock."""
    fake = FakeTime()
    monkeypatch.setattr(
        storage, "RetryPolicy", functools.partial(RetryPolicy, clock=fake.clock, sleep=fake.sleep)
    )

    def install(failures: int, exc: BaseException) -> FlakyFilesystem:
        flaky = FlakyFilesystem(failures, exc)
        root = f"/flaky-{uuid.uuid4().hex}/"  # fsspec's memory store is process-wide
        monkeypatch.setattr(
            storage, "filesystem", lambda uri, s3=None: (flaky, root + uri.partition("://")[2])
        )
        return flaky

    return install


def test_every_storage_operation_retries_transient_faults(flaky_s3: Callable[..., FlakyFilesystem]) -> None:
    flaky = flaky_s3(3, EndpointConnectionError(endpoint_url=ENDPOINT))
    options = S3Options(endpoint_url=ENDPOINT, retry_seconds=60)

    write_bytes_atomic("s3://b/in/x.png", b"payload", s3=options)
    assert read_bytes("s3://b/in/x.png", s3=options) == b"payload"
    with open_input("s3://b/in/x.png", s3=options) as handle:
        assert handle.read() == b"payload"
    assert file_info("s3://b/in/x.png", s3=options)["size"] == 7
    assert exists("s3://b/in/x.png", s3=options)
    assert [e.relative_path for e in list_files("s3://b/in", None, s3=options)] == ["x.png"]

    assert {name: flaky.calls[name] for name in ("pipe_file", "cat_file", "open", "find")} == {
        "pipe_file": 4,
        "cat_file": 4,
        "open": 4,
        "find": 4,
    }


def test_storage_error_contract_is_kept_under_retries(flaky_s3: Callable[..., FlakyFilesystem]) -> None:
    flaky = flaky_s3(0, EndpointConnectionError(endpoint_url=ENDPOINT))
    options = S3Options(endpoint_url=ENDPOINT, retry_seconds=60)

    with pytest.raises(FileNotFoundError, match=re.escape("s3://b/missing.png")):
        read_bytes("s3://b/missing.png", s3=options)
    assert not exists("s3://b/missing.png", s3=options)
    with pytest.raises(FileNotFoundError, match=re.escape("s3://b/nothing")):
        list_files("s3://b/nothing", None, s3=options)
    assert flaky.calls["cat_file"] == 1  # a missing object is not retried


def test_storage_outage_names_endpoint_and_uri(flaky_s3: Callable[..., FlakyFilesystem]) -> None:
    flaky_s3(10**9, EndpointConnectionError(endpoint_url=f"{ENDPOINT}/b/x.png"))
    options = S3Options(endpoint_url=ENDPOINT, retry_seconds=90)

    with pytest.raises(StorageUnavailableError) as info:
        write_bytes_atomic("s3://b/x.png", b"x", s3=options)
    assert re.fullmatch(
        rf"S3 at {re.escape(ENDPOINT)} unreachable for 90 s while writing s3://b/x\.png "
        r"\(EndpointConnectionError: .*\); is the store up\?",
        str(info.value),
    )


def test_local_and_memory_storage_are_not_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_policy(**kwargs: Any) -> RetryPolicy:
        raise AssertionError("local and memory storage must not go through the retry policy")

    monkeypatch.setattr(storage, "RetryPolicy", no_policy)
    for root in (str(tmp_path), "memory://no-retry"):
        uri = f"{root}/x.png"
        write_bytes_atomic(uri, b"x")
        assert read_bytes(uri) == b"x" and exists(uri) and file_info(uri)["size"] == 1
        assert [e.relative_path for e in list_files(root, None)] == ["x.png"]


def test_s3_options_retry_seconds_is_a_plain_validated_field() -> None:
    assert S3Options().retry_seconds == 120.0
    assert "retry_seconds" in S3Options.model_fields and S3Options.model_fields["retry_seconds"].description
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        S3Options(retry_seconds=-1)
    options = S3Options(endpoint_url=ENDPOINT, region="eu-west-1", retry_seconds=5)
    assert pickle.loads(pickle.dumps(options)) == options
    assert S3Options.model_validate_json(options.model_dump_json()) == options
    assert options.model_dump()["retry_seconds"] == 5.0
    assert options != S3Options(endpoint_url=ENDPOINT, region="eu-west-1")
    assert "retry_seconds" not in options.storage_options()  # s3fs must never see it


@pytest.mark.parametrize("window_s", [0.0, 1.0, 5.0, 60.0, 120.0, 127.0, 128.0, 3600.0])
def test_gdal_retries_cover_the_same_window(window_s: float) -> None:
    options = raster.gdal_s3_options(S3Options(endpoint_url=ENDPOINT, retry_seconds=window_s))
    retries, first_delay = int(options["GDAL_HTTP_MAX_RETRY"]), float(options["GDAL_HTTP_RETRY_DELAY"])
    # GDAL multiplies the delay by at least 2 after each retry, so this is its shortest total wait.
    assert first_delay * (2**retries - 1) >= window_s
    assert (
        retries == 0 or first_delay * (2 ** (retries - 1) - 1) < window_s
    )  # and no more retries than needed
    assert raster.gdal_s3_options(None)["GDAL_HTTP_MAX_RETRY"] == "7"


def _options(server: Any, retry_seconds: float) -> S3Options:
    return S3Options(
        endpoint_url=server.endpoint_url, key=server.key, secret=server.secret, retry_seconds=retry_seconds
    )


@pytest.mark.slow
def test_operations_survive_a_store_restart(
    restartable_s3_server: SeaweedFS, caplog: pytest.LogCaptureFixture
) -> None:
    server = restartable_s3_server.server
    bucket = server.create_bucket()
    server.filesystem().pipe_file(f"{bucket}/in/a.png", b"written before the outage")
    options = _options(server, retry_seconds=60)
    payload = bytes(range(256)) * 1024

    restartable_s3_server.stop()
    with caplog.at_level(logging.WARNING, logger=retry.__name__), ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        write = pool.submit(write_bytes_atomic, f"s3://{bucket}/out/m.png", payload, options)
        read = pool.submit(read_bytes, f"s3://{bucket}/in/a.png", options)
        listing = pool.submit(list_files, f"s3://{bucket}/in", None, options)
        # A few seconds of real outage: the policy's timing (backoff, window, warning throttle) is
        # tested on the fake clock above; here, that real operations wait and then succeed.
        time.sleep(5)
        assert not any(future.done() for future in (write, read, listing)), "an operation gave up early"
        restartable_s3_server.start()

        write.result(timeout=60)
        assert read.result(timeout=60) == b"written before the outage"
        assert [entry.relative_path for entry in listing.result(timeout=60)] == ["a.png"]
        elapsed = time.monotonic() - started

    assert elapsed < 35
    assert server.filesystem().cat_file(f"{bucket}/out/m.png") == payload
    warnings = [r for r in caplog.records if r.name == retry.__name__]
    assert 3 <= len(warnings) <= 3 * (math.ceil(elapsed / 10) + 1)  # throttled, not one per attempt


@pytest.mark.slow
def test_outage_longer_than_the_window_raises_one_line_error(restartable_s3_server: SeaweedFS) -> None:
    server = restartable_s3_server.server
    bucket = server.create_bucket()
    server.filesystem().pipe_file(f"{bucket}/x.jpg", b"x")
    uri = f"s3://{bucket}/x.jpg"

    restartable_s3_server.stop()
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        read_bytes(uri, s3=_options(server, retry_seconds=5))
    elapsed = time.monotonic() - started

    # The last attempt starts at the window's end; botocore's own retries inside it add up to ~15 s.
    assert 5 <= elapsed <= 25
    message = str(info.value)
    assert "\n" not in message
    assert f"S3 at {server.endpoint_url} unreachable for" in message
    assert f"while reading {uri} (EndpointConnectionError:" in message

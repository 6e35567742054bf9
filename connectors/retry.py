"""Retry policy for transient storage faults: capped exponential backoff with full jitter over a time window.

A store that restarts or throttles for a minute must not turn healthy inputs into error rows, and an
outage that outlasts the window must end in one clear ``StorageUnavailableError`` rather than a
botocore traceback. This module only classifies errors and paces attempts; ``storage`` decides which
calls go through it. botocore and aiohttp are never imported here: their exceptions are looked up in
``sys.modules``, because one of theirs cannot have been raised before its module was loaded.
"""

from __future__ import annotations

import errno
import logging
import random
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Backoff ceiling of the first retry; it doubles per attempt up to ``MAX_DELAY_S``.
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0
#: A retrying operation logs at most one warning per this many seconds.
LOG_EVERY_S = 10.0

#: S3 error codes that mean "try again later"; HEAD responses have no body, so there the code is the status.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "TooManyRequests",
        "429",
        "500",
        "502",
        "503",
        "504",
    }
)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
    }
)
# What aiobotocore turns refused/reset/closed connections and timeouts into.
_BOTOCORE_TRANSIENT = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ResponseStreamingError",
)
# What escapes s3fs unwrapped when a response body breaks off mid-read.
_AIOHTTP_TRANSIENT = ("ClientConnectionError", "ClientPayloadError")


class StorageUnavailableError(OSError):
    """The store kept failing with transient errors for the whole retry window; the message says where and how long."""


# A missing object, a refusal or a bad argument does not heal by waiting; neither does an operation
# that already retried for its whole window.
_PERMANENT: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
    ValueError,
    TypeError,
    ssl.SSLError,
    StorageUnavailableError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes, outermost first (s3fs hides the botocore error in ``__cause__``)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _named(module: str, names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    loaded = sys.modules.get(module)
    return tuple(getattr(loaded, name) for name in names) if loaded is not None else ()


def _is_transient_link(link: BaseException) -> bool:
    if isinstance(link, ConnectionError | TimeoutError):
        return True
    if isinstance(link, OSError) and link.errno in _TRANSIENT_ERRNOS:
        return True
    if isinstance(link, _named("botocore.exceptions", _BOTOCORE_TRANSIENT)):
        return True
    if isinstance(link, _named("aiohttp", _AIOHTTP_TRANSIENT)):
        return not isinstance(link, _named("aiohttp", ("ClientSSLError",)))
    response = getattr(link, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in TRANSIENT_CODES or status in TRANSIENT_STATUS
    return False


def transient_cause(exc: BaseException) -> BaseException | None:
    """The link of ``exc``'s cause chain that makes it worth retrying, or None.

    The walk stops at the first permanent error, so a 404 or 403 is never retried whatever led to it.
    """
    for link in _chain(exc):
        if isinstance(link, _PERMANENT):
            return None
        if _is_transient_link(link):
            return link
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether waiting could make the call that raised ``exc`` succeed (outage, reset, throttling, 5xx)."""
    return transient_cause(exc) is not None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient errors until ``window_s`` seconds have passed since the first attempt.

    ``clock``, ``sleep`` and ``uniform`` are injectable so tests can run hours of outage in milliseconds.
    """

    window_s: float
    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    log_every_s: float = LOG_EVERY_S
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    uniform: Callable[[float, float], float] = random.uniform

    def delay(self, attempt: int) -> float:
        """Pause after failed attempt ``attempt`` (0-based).

        Full jitter (uniform below the capped exponential) spreads out the many workers that saw the
        same outage, so a store coming back is not hit by all of them at once.
        """
        ceiling = min(self.max_delay_s, self.first_delay_s * 2.0 ** min(attempt, 32))
        return self.uniform(0.0, ceiling)

    def call(self, operation: Callable[[], T], *, store: str, action: str) -> T:
        """Return ``operation()``, retrying transient errors; non-transient ones propagate at once.

        ``store`` (e.g. "S3 at http://host:8333") and ``action`` (e.g. "reading s3://b/x.jpg") only
        word the warnings and the final ``StorageUnavailableError``. The last attempt starts when the
        window ends, so the operation is retried for at least ``window_s`` seconds.
        """
        start = self.clock()
        deadline = start + self.window_s
        last_warning: float | None = None
        attempt = 0
        while True:
            try:
                return operation()
            except Exception as exc:
                cause = transient_cause(exc)
                if cause is None:
                    raise
                now = self.clock()
                if now >= deadline:
                    raise StorageUnavailableError(
                        f"{store} unreachable for {now - start:.0f} s while {action} ({_one_line(cause)}); "
                        "is the store up?"
                    ) from exc
                if last_warning is None or now - last_warning >= self.log_every_s:
                    logger.warning(
                        "%s failing while %s (%s); retrying for up to %.0f s more",
                        store,
                        action,
                        _one_line(cause),
                        deadline - now,
                    )
                    last_warning = now
                self.sleep(min(self.delay(attempt), deadline - now))
                attempt += 1

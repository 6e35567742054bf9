"""Exit codes and job-level errors: what ends a run as a whole, and how it is told.

Per-input problems never come here: they are `error` rows in the manifest. What does come
here (a bad flag, missing weights, an unreachable store, a cluster too small, a crash) is told
in one line on stderr and exits with `EXIT_JOB_ERROR`, never with a traceback; the traceback
goes to the log at debug level and into the run's summary.
"""

from __future__ import annotations

import re
import traceback

__all__ = [
    "EXIT_FAILURES",
    "EXIT_JOB_ERROR",
    "EXIT_OK",
    "JobError",
    "input_error",
    "one_line",
    "root_cause",
    "traceback_text",
]

#: Every input ok, or no more failed than --max-failure-fraction allows.
EXIT_OK = 0
#: The job finished, but more inputs failed than --max-failure-fraction allows.
EXIT_FAILURES = 1
#: The job could not run or did not finish (configuration, weights, storage, cluster, crash).
EXIT_JOB_ERROR = 2


class JobError(Exception):
    """A problem with the job as a whole; its message is the one line a user sees."""


def input_error(uri: str, exc: BaseException) -> str:
    """A per-input error message that names the input once (decoders often name it already)."""
    return str(exc) if uri in str(exc) else f"{uri}: {exc}"


def root_cause(exc: BaseException) -> BaseException:
    """The user-code exception inside Ray's wrappers: a failed task raises RayTaskError (whose
    ``cause`` is the original), and Ray Data wraps that in UserCodeException (``__cause__``)."""
    seen = set()
    while id(exc) not in seen and type(exc).__module__.startswith("ray"):
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        inner = inner if isinstance(inner, BaseException) else exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


#: How an exception of this project's own code appears in a task's remote traceback.
_REMOTE_ERROR = re.compile(r"^(?:connectors|jobs|birefnet_core)(?:\.\w+)+\.(\w+): (.+)$", re.MULTILINE)
#: Any other exception line there (a model's RuntimeError, a CUDA fault): "Name: message".
_ANY_REMOTE_ERROR = re.compile(r"^((?:\w+\.)*(\w+(?:Error|Exception))): (.+)$", re.MULTILINE)


def _remote_line(text: str) -> str | None:
    """The message of the project's own exception in a remote traceback, else the innermost
    other exception that is not Ray's own wrapper, as "Name: message"."""
    found = _REMOTE_ERROR.search(text)
    if found:
        return found.group(2).strip()
    others = [m for m in _ANY_REMOTE_ERROR.finditer(text) if not m.group(1).startswith("ray")]
    return f"{others[-1].group(2)}: {others[-1].group(3).strip()}" if others else None


def one_line(exc: BaseException) -> str:
    """A single line naming the problem: the first line of the root cause's message.

    A stage that fails inside Ray Data reaches the driver as UserCodeException, whose chain was
    lost in pickling; the original (say, the store being unreachable) survives only in the
    remote traceback text, so that is where its message is taken from."""
    cause = root_cause(exc)
    if type(cause).__module__.startswith("ray"):
        found = _remote_line(str(exc))
        if found:
            return found
    text = str(cause).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(cause, JobError | OSError | ValueError) and message:
        return message
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))

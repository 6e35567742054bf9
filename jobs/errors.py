"""Exit codes and job-level errors: what ends a run as a whole, and how it is told.

Per-input problems never come here: they are `error` rows in the manifest. What does come
here (a bad flag, missing weights, an unreachable store, a cluster too small, a crash) is told
in one line on stderr and exits with `EXIT_JOB_ERROR`, never with a traceback; the traceback
goes to the log at debug level and into the run's summary.
"""

from __future__ import annotations

import traceback

__all__ = [
    "EXIT_FAILURES",
    "EXIT_JOB_ERROR",
    "EXIT_OK",
    "JobError",
    "one_line",
    "root_cause",
]

#: Every input ok, or no more failed than --max-failure-fraction allows.
EXIT_OK = 0
#: The job finished, but more inputs failed than --max-failure-fraction allows.
EXIT_FAILURES = 1
#: The job could not run or did not finish (configuration, weights, storage, cluster, crash).
EXIT_JOB_ERROR = 2


class JobError(Exception):
    """A problem with the job as a whole; its message is the one line a user sees."""


def root_cause(exc: BaseException) -> BaseException:
    """The user-code exception inside Ray's wrappers (a failed task raises RayTaskError(cause))."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        if isinstance(inner, BaseException) and type(exc).__name__.startswith("Ray"):
            exc = inner
            continue
        if type(exc).__name__.startswith("Ray") and isinstance(exc.__cause__, BaseException):
            exc = exc.__cause__
            continue
        break
    return exc


def one_line(exc: BaseException) -> str:
    """A single line naming the problem: the first line of the root cause's message."""
    cause = root_cause(exc)
    text = str(cause).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(cause, JobError | OSError | ValueError) and message:
        return message
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))

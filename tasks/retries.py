"""Retry policy shared by the stage tasks: back off and retry only what is transient.

A bad dataset, a failed validation or a parity miss fails the same way every time, so
retrying it only delays the message; so do a permission error, a full or read-only disk and
a schema error. A dropped connection, a timeout, a locked database or a server that says
"busy, try again" (429, 502, 503, 504) may not.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

from prefect.tasks import exponential_backoff

# Connection and timeout errors (the platform's own outages subclass them:
# StorageUnavailable, DaskUnavailable) are transient whatever their errno.
TRANSIENT = (ConnectionError, TimeoutError)
# OS errors that a moment later may not happen again; every other one (EACCES, ENOSPC,
# EROFS, ENOENT, EISDIR, ...) fails at once with its message.
TRANSIENT_ERRNOS = frozenset({
    errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET,
    errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET, errno.ESTALE})
TRANSIENT_HTTP = frozenset({429, 502, 503, 504})
_BUSY_DATABASE = ("database is locked", "database table is locked", "database is busy")
RETRIES = 2
RETRY_DELAYS = exponential_backoff(backoff_factor=2)
RETRY_JITTER = 0.5


def is_transient(error: BaseException | None) -> bool:
    """Whether trying again may succeed: see the module's docstring. A client's own error
    (httpx's ConnectError, requests' ConnectionError, MLflow's "API request failed") is
    judged by what it was raised from or while handling."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if _transient_itself(error):
            return True
        seen.add(id(error))
        # The context too when a wrapper suppressed it (`from None`, as httpcore does): the
        # message is shortened for people, what happened underneath is unchanged.
        error = error.__cause__ or error.__context__
    return False


def _transient_itself(error: BaseException) -> bool:
    if isinstance(error, TRANSIENT):
        return True
    if isinstance(error, sqlite3.OperationalError):  # also "no such table": a schema error
        return any(busy in str(error).lower() for busy in _BUSY_DATABASE)
    if isinstance(error, OSError):
        return error.errno in TRANSIENT_ERRNOS
    return _http_status(error) in TRANSIENT_HTTP


def _http_status(error: BaseException | None) -> int | None:
    """The HTTP status an error carries (httpx, requests, MLflow's REST errors), if any."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None) or getattr(error, "status_code", None)
    if status is None and hasattr(error, "get_http_status_code"):
        status = error.get_http_status_code()
    return status if isinstance(status, int) else None


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry when the failure is transient, never for a domain or a lasting error."""
    return is_transient(state.result(raise_on_failure=False))


IO_RETRIES: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient,
}

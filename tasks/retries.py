"""Retry policy shared by the stage tasks: back off and retry only transient I/O errors.

A bad dataset, a failed validation or a parity miss fails the same way every time, so
retrying it only delays the message; a dropped connection or a locked database may not.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from prefect.tasks import exponential_backoff

TRANSIENT = (ConnectionError, TimeoutError, sqlite3.OperationalError, OSError)
RETRIES = 2
RETRY_DELAYS = exponential_backoff(backoff_factor=2)
RETRY_JITTER = 0.5


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry when the failure is a transient I/O error, never for a domain error."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, TRANSIENT) and not isinstance(error, FileNotFoundError)


IO_RETRIES: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient,
}

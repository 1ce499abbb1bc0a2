"""Which failures the stage tasks retry: transient I/O only, never a domain error."""

import sqlite3

import pytest
from prefect.states import Failed

from mlops.data.loading import DataError
from tasks.retries import IO_RETRIES, retry_transient


@pytest.mark.parametrize("error", [ConnectionError("reset"), TimeoutError("slow"),
                                   sqlite3.OperationalError("database is locked")])
def test_transient_errors_are_retried(error: Exception) -> None:
    assert retry_transient(None, None, Failed(data=error))


@pytest.mark.parametrize("error", [DataError("x.csv: dataset file is empty"),
                                   FileNotFoundError("gone"), ValueError("bad")])
def test_domain_errors_fail_at_once(error: Exception) -> None:
    assert not retry_transient(None, None, Failed(data=error))


def test_backoff_grows() -> None:
    delays = IO_RETRIES["retry_delay_seconds"](IO_RETRIES["retries"])
    assert len(delays) == 2 and delays[1] > delays[0] > 0

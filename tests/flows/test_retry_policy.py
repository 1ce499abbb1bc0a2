"""Which failures the stage tasks retry: what is transient only, never a domain error nor a
lasting one (a permission error, a full disk, a schema error), each raised for real here."""

import errno
import os
import sqlite3
from pathlib import Path

import httpx
import pytest
from prefect import flow, task
from prefect.states import Failed

from mlops.data.loading import DataError
from tasks.retries import IO_RETRIES, is_transient, retry_transient


def _raised(action) -> BaseException:  # noqa: ANN001 - any callable
    with pytest.raises(Exception) as caught:
        action()
    return caught.value


def _locked_database(tmp_path: Path) -> BaseException:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    try:
        return _raised(lambda: other.execute("SELECT * FROM t").fetchall())
    finally:
        other.close()
        holder.rollback()
        holder.close()


def _permission_error(tmp_path: Path) -> BaseException:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.geteuid() == 0:  # root writes anyway; a read-only sysfs file refuses root too
            return _raised(lambda: Path("/sys/kernel/uevent_seqnum").write_text("1"))
        return _raised(lambda: (folder / "x").write_text("x"))
    finally:
        folder.chmod(0o700)


def _full_disk() -> BaseException:
    def write() -> None:
        with open("/dev/full", "w") as full:  # the kernel's always-full device: ENOSPC
            full.write("x" * 10_000)
            full.flush()
    return _raised(write)


def _schema_error(tmp_path: Path) -> BaseException:
    connection = sqlite3.connect(tmp_path / "schema.db")
    try:
        return _raised(lambda: connection.execute("SELECT * FROM no_such_table"))
    finally:
        connection.close()


def _http_error(status: int) -> BaseException:
    request = httpx.Request("POST", "http://mlflow.invalid/api/2.0/mlflow/runs/create")
    response = httpx.Response(status, request=request)
    return _raised(response.raise_for_status)


def _refused_connection() -> BaseException:
    return _raised(lambda: httpx.get("http://127.0.0.1:9/", timeout=2))


@pytest.mark.parametrize("make", [
    lambda tmp: ConnectionError("reset"), lambda tmp: TimeoutError("slow"),
    _locked_database, lambda tmp: _http_error(503), lambda tmp: _http_error(429),
    lambda tmp: _http_error(504), lambda tmp: OSError(errno.ECONNRESET, "reset by peer"),
    lambda tmp: _refused_connection(),
], ids=["connection", "timeout", "locked-database", "http-503", "http-429", "http-504",
        "econnreset", "refused-connection"])
def test_transient_errors_are_retried(make, tmp_path: Path) -> None:  # noqa: ANN001
    error = make(tmp_path)
    assert retry_transient(None, None, Failed(data=error)), repr(error)


@pytest.mark.parametrize("make", [
    _permission_error, lambda tmp: _full_disk(), _schema_error,
    lambda tmp: _http_error(400), lambda tmp: _http_error(403),
    lambda tmp: DataError("x.csv: dataset file is empty"),
    lambda tmp: FileNotFoundError(errno.ENOENT, "gone"), lambda tmp: ValueError("bad"),
    lambda tmp: OSError(errno.EROFS, "read-only file system"),
], ids=["permission", "full-disk", "schema", "http-400", "http-403", "domain", "missing-file",
        "bad-value", "read-only-disk"])
def test_lasting_and_domain_errors_fail_at_once(make, tmp_path: Path) -> None:  # noqa: ANN001
    error = make(tmp_path)
    assert not is_transient(error), repr(error)
    assert not retry_transient(None, None, Failed(data=error))


def test_the_real_errors_are_what_they_claim(tmp_path: Path) -> None:
    """The cases above are the OS's and SQLite's own errors, not look-alikes."""
    assert _full_disk().errno == errno.ENOSPC
    assert _permission_error(tmp_path).errno == errno.EACCES
    assert "no such table" in str(_schema_error(tmp_path))
    assert "database is locked" in str(_locked_database(tmp_path))


def test_backoff_grows() -> None:
    delays = IO_RETRIES["retry_delay_seconds"](IO_RETRIES["retries"])
    assert len(delays) == 2 and delays[1] > delays[0] > 0


def test_a_task_with_the_policy_fails_at_once_on_a_full_disk_and_retries_a_reset(
        prefect_server: None) -> None:
    """On a real Prefect server: attempts counted as the task runs them (no delays)."""
    attempts = {"disk": 0, "reset": 0}
    policy = {**IO_RETRIES, "retry_delay_seconds": 0, "retry_jitter_factor": None}

    @task(**policy)
    def write_to_a_full_disk() -> None:
        attempts["disk"] += 1
        raise _full_disk()

    @task(**policy)
    def reset_then_succeed() -> str:
        attempts["reset"] += 1
        if attempts["reset"] == 1:
            raise ConnectionResetError(errno.ECONNRESET, "reset by peer")
        return "ok"

    @flow
    def both() -> tuple[object, object]:
        return (write_to_a_full_disk(return_state=True), reset_then_succeed(return_state=True))

    disk, reset = both()
    assert disk.is_failed() and attempts["disk"] == 1
    assert "No space left on device" in str(disk.result(raise_on_failure=False))
    assert reset.is_completed() and attempts["reset"] == 2

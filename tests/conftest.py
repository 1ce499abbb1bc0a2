"""Shared test set-up: no analytics, no network, every output under a temporary folder."""

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float = 30.0, what: str = "the condition",
             poll_s: float = 0.2) -> T:
    """The first truthy value ``condition`` returns; fails when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not after {timeout_s:.0f} s")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the Prefect server is slow: `make test-fast` (``-m "not slow"``) starts
    none."""
    for item in items:
        if "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def promtool() -> str:
    """promtool from PATH or Debian's package; its absence is a failure, not a skip."""
    found = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if found is None:
        pytest.fail("promtool not found on PATH or at /usr/bin/promtool: `make tools` installs "
                    "it (Debian package prometheus)")
    return found

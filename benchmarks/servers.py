"""Servers under load, one at a time: a subprocess on a free loopback port, its log in a file.

A server leads its own process group (``mlops.processes``), so stopping it also stops what
it started (``mlflow models serve`` runs uvicorn as a child).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from mlops.processes import start_background, stop_background, tail

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, log_path: Path) -> None:
    """Until GET url answers 200; exits with the end of the log if the server dies first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: server exited ({process.returncode}); end of "
                             f"{log_path}:\n{tail(log_path)}")
        try:
            status = httpx.get(url, timeout=2.0).status_code
        except httpx.HTTPError:
            status = None
        if status == 200:
            return
        if status == 404:
            raise SystemExit(f"{url}: 404, the server has no such readiness route")
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {READY_TIMEOUT_S:.0f} s:\n{tail(log_path)}")


@contextmanager
def serving(server: dict[str, Any], ready_path: str, fill: dict[str, str],
            logs: Path) -> Iterator[str]:
    """Start ``server["command"]`` (a template filled with ``fill`` and the port), wait
    until ``ready_path`` answers, yield the base URL; SIGTERM it (then SIGKILL) on exit."""
    port = free_port()
    command = [part.format(port=port, **fill) for part in server["command"]]
    log_path, pid_path = logs / f"{server['key']}.log", logs / f"{server['key']}.pid"
    log_path.unlink(missing_ok=True)
    process = start_background(command, log_path, pid_path, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + ready_path, process, log_path)
        yield url
    finally:
        stop_background(pid_path)

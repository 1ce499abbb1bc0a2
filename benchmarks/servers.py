"""Servers under load, one at a time: a subprocess on a free loopback port, its log in a file.

A server leads its own process group (``mlops.processes``), so stopping it also stops what
it started (``mlflow models serve`` runs uvicorn as a child).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlops.processes import ServerNotReady, start_background, stop_background, wait_until_ready

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
        try:
            wait_until_ready(url + ready_path, process, log_path, READY_TIMEOUT_S)
        except ServerNotReady as exc:
            raise SystemExit(str(exc)) from None
        yield url
    finally:
        stop_background(pid_path)

"""Servers under load, all up at once: subprocesses on free loopback ports, logs in files.

Every server is started before any is waited on (their start-ups overlap), then each must
answer its readiness route (over TLS, trusting the bench's own certificate, when it
serves TLS). A server leads its own process group (``mlops.processes``), so stopping it
also stops what it started (``mlflow models serve`` runs uvicorn as a child, granian a
worker).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlops.processes import start_background, stop_background, tail

READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Server:
    """One server of the benchmark: its command (a template: ``{port}``, ``{grpc_port}``
    and the bench's ``fill``), the request kinds it is loaded with over REST and gRPC, and
    how it is asked (``api``: ``v2`` or ``mlflow`` routes and bodies)."""

    key: str
    name: str
    command: tuple[str, ...]
    kinds: tuple[str, ...]
    grpc_kinds: tuple[str, ...] = ()
    api: str = "v2"
    ready: str = "/v2/health/ready"
    connections: tuple[int, ...] = (1, 16)
    constant: bool = False  # answers a constant: any number of predictions passes the check
    tls: bool = False


@dataclass(frozen=True)
class Running:
    """A started, ready server: its REST base URL, and gRPC address when it has one."""

    server: Server
    url: str
    grpc_address: str | None = None
    process: subprocess.Popen | None = field(default=None, compare=False, repr=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(server: Server, fill: dict[str, str], logs: Path) -> Running:
    port, grpc_port = free_port(), free_port()
    command = [part.format(port=port, grpc_port=grpc_port, **fill) for part in server.command]
    log_path = logs / f"{server.key}.log"
    log_path.unlink(missing_ok=True)
    process = start_background(command, log_path, logs / f"{server.key}.pid",
                               env=dict(os.environ))
    scheme = "https" if server.tls else "http"
    return Running(server, f"{scheme}://127.0.0.1:{port}",
                   f"127.0.0.1:{grpc_port}" if server.grpc_kinds else None, process)


def wait_ready(running: Running, logs: Path, verify: ssl.SSLContext | bool,
               timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the readiness route until 200; stop the bench with the log's end when the
    process exits first or the time runs out."""
    url, log_path = running.url + running.server.ready, logs / f"{running.server.key}.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running.process is not None and running.process.poll() is not None:
            raise SystemExit(f"{url}: {running.server.name} exited with code "
                             f"{running.process.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(url, timeout=2.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}: {running.server.name} not ready after {timeout_s:.0f} s:\n"
                     f"{tail(log_path)}")


@contextmanager
def serving(servers: list[Server], fill: dict[str, str], logs: Path,
            verify: ssl.SSLContext | bool = True) -> Iterator[list[Running]]:
    """Start every server, wait until each is ready, yield them; stop them all on exit
    (SIGTERM to each process group, then SIGKILL)."""
    started: list[Running] = []
    try:
        for server in servers:
            started.append(start(server, fill, logs))
        for running in started:
            wait_ready(running, logs, verify)
        yield started
    finally:
        for running in started:
            stop_background(logs / f"{running.server.key}.pid")

"""A real uvicorn server in a thread, as ``python -m mlops.serving`` runs the app (its
protocol, limits and timeouts), and raw-socket requests for what HTTP clients will not
send: bodies shorter or longer than their Content-Length, headers a byte at a time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from serving_setup import ADMIN_TOKEN, serving_manager

from mlops.serving.app import ServingConfig, create_app
from mlops.serving.server import uvicorn_config

ROW = [0.5, -1.0, 2.0, 0.1]
RECORD = dict(zip(["f0", "f1", "f2", "f3"], ROW, strict=True))
V2 = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
INFER, PREDICT = "/v2/models/synthetic/infer", "/v1/predict"
BODY_TIMEOUT_S = 1.5


@contextmanager
def serving(onnx_model: tuple[Path, str], **settings: Any) -> Iterator[tuple[str, int]]:
    """The app served by uvicorn as ``python -m mlops.serving`` serves it (its protocol,
    limits and timeouts), on a free port in a thread: (base URL, port)."""
    config = ServingConfig(admin_token=ADMIN_TOKEN, access_log=False, **settings)
    with in_thread(create_app(serving_manager(*onnx_model), None, config), config) as port:
        yield f"http://127.0.0.1:{port}", port


@contextmanager
def in_thread(app: FastAPI, config: ServingConfig) -> Iterator[int]:
    """``app`` on uvicorn as the service runs it (``uvicorn_config``), on a free loopback
    port, in a thread: the port, until the block ends."""
    server = uvicorn.Server(uvicorn_config(app, config, "127.0.0.1", 0, "warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)


def exchange(port: int, data: bytes, wait_s: float = 10.0,
             then: tuple[bytes, float] | None = None) -> tuple[bytes, float, bool]:
    """Send raw bytes (and, optionally, more bytes after a pause), read until the server
    closes or ``wait_s`` passes: (what came back, seconds it took, closed by the server)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        if then is not None:
            time.sleep(then[1])
            sock.sendall(then[0])
        received, closed = b"", False
        sock.settimeout(0.2)
        while time.monotonic() - start < wait_s:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    return received, time.monotonic() - start, closed


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def request(path: str, body: bytes, content_length: int | None = None,
            headers: str = "content-type: application/json\r\n") -> bytes:
    length = len(body) if content_length is None else content_length
    return (f"POST {path} HTTP/1.1\r\nhost: test\r\n{headers}content-length: {length}\r\n\r\n"
            .encode() + body)

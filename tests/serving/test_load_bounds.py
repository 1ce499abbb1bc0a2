"""The service bounds its load, served for real: a full inference queue or too many
connections are answered 503 with Retry-After at once (every other request correctly),
and slow clients are cut off after the read timeouts while others are served."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx_models import expected_scores
from raw_http import INFER, V2, exchange, request, serving, status_of

from mlops.serving.app import ServingConfig


async def _burst(url: str, rows: np.ndarray) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(rows), max_keepalive_connections=len(rows))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        return await asyncio.gather(*[
            client.post("/v1/predict", json={"records": [dict(zip(["f0", "f1", "f2", "f3"],
                                                                   row.tolist(), strict=True))]})
            for row in rows])


@pytest.mark.parametrize("window_ms", [2.0, 0.0], ids=["micro-batching", "direct"])
def test_a_burst_over_the_queue_limit_gets_503_with_retry_after(
        onnx_model: tuple[Path, str], window_ms: float) -> None:
    rows = np.random.default_rng(7).normal(size=(96, 4)).astype(np.float32)
    expected = expected_scores(rows)
    # Inference on a thread (no inline calls), so that rows queue and the bound is reached.
    with serving(onnx_model, max_batch=2, max_queued_rows=2, batch_window_ms=window_ms,
                 inference_threads=1, retry_after_s=3, inline_budget_us=0) as (url, _):
        responses = asyncio.run(_burst(url, rows))
        assert httpx.post(f"{url}/v1/predict", json={"records": [{"f0": 1, "f1": 2, "f2": 3,
                                                                  "f3": 4}]}).status_code == 200
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    served = [(i, r) for i, r in enumerate(responses) if r.status_code == 200]
    assert refused and served, statuses
    for response in refused:
        assert response.headers["retry-after"] == "3"
        assert response.json()["error"] == "Overloaded"
        assert "limit of 2" in response.json()["detail"]
    for i, response in served:  # each answer is its own row's, not a neighbour's
        assert response.json()["predictions"][0] == pytest.approx(float(expected[i]), rel=1e-5)


def test_the_queue_limit_must_hold_one_request() -> None:
    with pytest.raises(ValueError, match="must hold one whole request"):
        ServingConfig(max_batch=10, max_queued_rows=5)


def test_beyond_max_connections_503_with_retry_after(onnx_model: tuple[Path, str]) -> None:
    with serving(onnx_model, max_connections=3, header_timeout_s=20) as (url, port):
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.3)  # the server has accepted them
            received, _, closed = exchange(port, request(INFER, json.dumps(V2).encode()))
            assert status_of(received) == 503, received
            head = received.lower()
            assert b"retry-after: 1\r\n" in head and b"connection: close" in head and closed
            assert b"connection limit" in received
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 5
        while httpx.post(f"{url}{INFER}", json=V2).status_code != 200:
            assert time.monotonic() < deadline, "connections were not released"
            time.sleep(0.05)


def _trickle(port: int, head: bytes, body: bytes, out: dict[str, object]) -> None:
    """A client that sends its body a byte a second; what it got back goes to ``out``."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head)
        received = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            received += chunk
            if not chunk or b"\r\n\r\n" in received:
                break
        sock.settimeout(5)
        try:
            while chunk := sock.recv(4096):
                received += chunk
            out["closed"] = True
        except OSError:
            out["closed"] = True
    out["received"], out["seconds"] = received, time.monotonic() - start


def test_a_slow_client_is_cut_off_while_others_are_served(
        onnx_model: tuple[Path, str]) -> None:
    body = json.dumps(V2).encode()
    with serving(onnx_model, body_timeout_s=2.0, header_timeout_s=2.0) as (url, port):
        out: dict[str, object] = {}
        slow = threading.Thread(target=_trickle,
                                args=(port, request(INFER, b"", len(body)), body, out))
        slow.start()
        latencies = []
        with httpx.Client(base_url=url, timeout=10) as client:
            while slow.is_alive():
                start = time.monotonic()
                response = client.post(INFER, json=V2)
                latencies.append(time.monotonic() - start)
                assert response.status_code == 200, response.text
                time.sleep(0.05)
        slow.join()
    assert status_of(out["received"]) == 408, out
    assert b"did not arrive within the body timeout" in out["received"]
    assert out["closed"] and 1.5 < out["seconds"] < 6, out
    assert len(latencies) >= 10 and max(latencies) < 1.0, latencies

"""The serving benchmark's parts that need no server: what it sends, how it counts.

The quick mode (``test_quick_modes``) runs them all against real servers; these pin the
details that a real run would only show as a wrong number: bytes on the wire, errors
h2load cannot see, the n/a rows of protocols the service lacks.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from pathlib import Path

import httpx
import numpy as np

from benchmarks import asgi_floor, bench_serving, h2load, serving_requests, wrk

H2LOAD_OUTPUT = """finished in 2.01s, 500.00 req/s, 92.18KB/s
requests: 1000 total, 1004 started, 1000 done, 998 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 998 2xx, 0 3xx, 0 4xx, 2 5xx
traffic: 184.37KB (188793) total, 3.44KB (3519) headers (space savings 95.95%), 115.21KB \
(115680) data
"""


def lua_bytes(literal: str) -> bytes:
    """What Lua reads from a double-quoted literal with decimal escapes."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m[1])), literal[1:-1]).encode("latin-1")


def test_wrk_scripts_carry_binary_bodies_and_headers_byte_for_byte(tmp_path: Path):
    body = bytes(range(256)) + b'"\\]==]\r\n9'
    script = wrk.write_script(tmp_path / "s.lua", body, headers={"X-Length": "12"})
    text = script.read_text()
    (literal,) = re.findall(r'^wrk\.body = (".*")$', text, re.MULTILINE)
    assert lua_bytes(literal) == body
    assert 'wrk.headers["X-Length"] = "12"' in text and "Content-Type" not in text
    assert 'wrk.headers["Content-Type"] = "application/json"' in wrk.write_script(
        tmp_path / "j.lua", '{"a": 1}').read_text()


def test_h2load_counts_calls_without_a_reply_as_errors():
    frame = h2load.frame(b"abc")
    assert frame == b"\x00\x00\x00\x00\x03abc"
    done, seconds, rps, errors = h2load.parse(H2LOAD_OUTPUT, expected_reply_bytes=120)
    assert (done, seconds, rps) == (1000, 2.01, 500.0)
    assert errors == 2 + (998 - 115680 // 120)  # failed, then succeeded without a reply


def test_binary_requests_put_the_json_length_in_the_header_and_raw_floats_after():
    payloads = serving_requests.Payloads(["a", "b"], [[1.0, 2.0], [3.0, 4.0]], 7)
    request = serving_requests.build("64-row binary", "v2", "m", payloads)
    length = int(request.headers[serving_requests.BINARY_HEADER])
    header = json.loads(request.body[:length])
    assert header["inputs"][0]["shape"] == [2, 2] and request.rows == 64
    assert struct.unpack("<4f", request.body[length:]) == (1.0, 2.0, 3.0, 4.0)
    answer = json.dumps({"outputs": [{"name": "prediction", "parameters": {
        "binary_data_size": 8}}]}).encode()
    response = httpx.Response(200, content=answer + np.zeros(2, "<f4").tobytes(),
                              headers={serving_requests.BINARY_HEADER: str(len(answer))})
    assert serving_requests.count_predictions(response) == 2


def test_grpc_requests_are_model_infer_messages_with_raw_contents():
    from tritonclient.grpc import service_pb2

    payloads = serving_requests.Payloads(["a", "b"], [[1.0, 2.0], [3.0, 4.0]], 7)
    request = serving_requests.build("gRPC 1-row", "v2", "m", payloads)
    message = service_pb2.ModelInferRequest.FromString(request.body)
    assert request.grpc and message.model_name == "m" and list(message.inputs[0].shape) == [1, 2]
    assert np.frombuffer(message.raw_input_contents[0], "<f4").tolist() == [1.0, 2.0]


def test_the_bare_floor_reads_the_body_and_answers_three_ways():
    async def call(method: str, path: str) -> tuple[int, bytes, int]:
        chunks = [{"type": "http.request", "body": b"x", "more_body": True},
                  {"type": "http.request", "body": b"y", "more_body": False}]
        sent: list[dict] = []

        async def receive() -> dict:
            return chunks.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        await asgi_floor.app({"type": "http", "method": method, "path": path}, receive, send)
        return sent[0]["status"], sent[1]["body"], len(chunks)

    status, body, unread = asyncio.run(call("POST", "/v2/models/any/infer"))
    assert status == 200 and json.loads(body)["outputs"] and unread == 0
    assert asyncio.run(call("GET", "/v2/health/ready"))[:2] == (200, b'{"status": "ready"}')
    assert asyncio.run(call("GET", "/elsewhere"))[0] == 404


def test_protocols_the_service_lacks_become_n_a_rows():
    servers, skipped = bench_serving.define_servers("--port PORT")
    service = next(s for s in servers if s.key == "batching-on")
    assert not service.grpc_kinds and "tls" not in [s.key for s in servers]
    assert sorted({row["skipped"] for row in skipped}) == [
        "n/a (service has no --grpc-port)", "n/a (service has no --ssl-certfile)"]
    servers, skipped = bench_serving.define_servers("--grpc-port N --ssl-certfile F")
    service = next(s for s in servers if s.key == "batching-on")
    assert "{grpc_port}" in service.command and service.grpc_kinds and not skipped
    assert [s.key for s in servers] == bench_serving.SERVER_KEYS

"""Odd requests to the service served for real (uvicorn, its protocol, a real ONNX model):
each a 4xx naming the problem, or a correct answer, never a 5xx or a hang.

Content-Type absent (tritonclient.http sends none) or naming UTF-16; bodies empty, not
UTF-8 or repeating a key; Content-Length longer or shorter than the body (raw sockets);
FP16 out of range; admin calls without, or with a wrong, bearer token.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx_models import expected_scores
from raw_http import (
    BODY_TIMEOUT_S,
    INFER,
    PREDICT,
    RECORD,
    ROW,
    V2,
    exchange,
    request,
    serving,
    status_of,
)
from serving_setup import ADMIN_TOKEN


@pytest.fixture(scope="module")
def service(onnx_model: tuple[Path, str]) -> Iterator[tuple[str, int]]:
    with serving(onnx_model, max_batch=100, body_timeout_s=BODY_TIMEOUT_S,
                 header_timeout_s=BODY_TIMEOUT_S) as served:
        yield served


@pytest.fixture(scope="module")
def http(service: tuple[str, int]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service[0], timeout=10) as client:
        yield client


def _expected() -> float:
    return float(expected_scores(np.array([ROW]))[0])


def _error(response: httpx.Response, status: int, *named: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    message = body.get("detail", body.get("error", ""))
    for text in named:
        assert text in message, message
    return message


@pytest.mark.parametrize(("path", "payload"), [(INFER, V2), (PREDICT, {"records": [RECORD]})],
                         ids=["v2", "v1"])
def test_a_json_body_without_content_type_is_served(http: httpx.Client, path: str,
                                                    payload: dict[str, Any]) -> None:
    """What tritonclient.http and KServe's clients send: JSON bytes, no Content-Type."""
    response = http.post(path, content=json.dumps(payload).encode())
    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text
    body = response.json()
    score = body["outputs"][0]["data"][0] if path == INFER else body["predictions"][0]
    assert score == pytest.approx(_expected(), rel=1e-5)


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE", "utf-32"])
def test_a_declared_utf16_or_utf32_body_is_decoded(http: httpx.Client, charset: str) -> None:
    data = json.dumps(V2).encode(charset)
    response = http.post(INFER, content=data,
                         headers={"content-type": f"application/json; charset={charset}"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"][0] == pytest.approx(_expected(), rel=1e-5)


def test_an_unaccepted_charset_is_415_naming_it(http: httpx.Client) -> None:
    response = http.post(INFER, content=json.dumps(V2).encode("latin-1"),
                         headers={"content-type": "application/json; charset=latin-1"})
    _error(response, 415, "'latin-1'", "UTF-8")


def test_bytes_not_in_the_declared_utf16_are_400(http: httpx.Client) -> None:
    response = http.post(INFER, content=json.dumps(V2).encode("utf-16")[:-1],
                         headers={"content-type": "application/json; charset=utf-16"})
    _error(response, 400, "not valid UTF-16")


@pytest.mark.parametrize(("data", "named"), [
    (json.dumps(V2).encode().replace(b'"features"', b'"feat\xffures"'), ["0xff", "UTF-8"]),
    (json.dumps(V2).encode("utf-16"), ["not valid UTF-8", "declare its charset"]),
    (b'{"inputs": [], "id": "caf\xe9"}', ["0xe9", "UTF-8"]),
], ids=["invalid-byte-in-a-string", "undeclared-utf16", "latin1-text"])
def test_a_body_that_is_not_utf8_is_400_naming_the_encoding(http: httpx.Client, data: bytes,
                                                            named: list[str]) -> None:
    _error(http.post(INFER, content=data, headers={"content-type": "application/json"}),
           400, *named)


def test_a_utf8_byte_order_mark_is_ignored(http: httpx.Client) -> None:
    response = http.post(INFER, content=b"\xef\xbb\xbf" + json.dumps(V2).encode())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", [INFER, PREDICT, "/v1/predict/entity"])
@pytest.mark.parametrize("data", [b"", b"  \r\n"], ids=["empty", "whitespace"])
def test_an_empty_body_is_400(http: httpx.Client, path: str, data: bytes) -> None:
    _error(http.post(path, content=data, headers={"content-type": "application/json"}),
           400, "body is empty")


@pytest.mark.parametrize(("path", "raw", "key"), [
    (INFER, '{"inputs": [], "inputs": ' + json.dumps(V2["inputs"]) + "}", "inputs"),
    (INFER, json.dumps(V2).replace('"datatype": "FP32"', '"datatype": "FP32", "datatype": '
                                                           '"INT8"'), "datatype"),
    (INFER, json.dumps({**V2, "parameters": {"a": {"b": 2}}}).replace(
        '"b": 2', '"b": 1, "b": 2'), "b"),
    (PREDICT, '{"records": [{"f0": 0.5, "f1": -1.0, "f2": 2.0, "f3": 0.1, "f0": 9}]}', "f0"),
    (PREDICT, '{"records": [{"f\\u0030": 0.5, "f0": 1, "f1": -1.0, "f2": 2.0, "f3": 0.1}]}',
     "f0"),
], ids=["top-level", "tensor-field", "nested-parameter", "record-feature", "escaped-key"])
def test_a_repeated_key_is_400_naming_it(http: httpx.Client, path: str, raw: str,
                                         key: str) -> None:
    _error(http.post(path, content=raw.encode()), 400, f"key {key!r} appears twice")


def test_colons_inside_strings_are_not_taken_for_repeated_keys(http: httpx.Client) -> None:
    body = {**V2, "id": "req:1:{\"inputs\": 2}", "parameters": {"note": "a: b"}}
    response = http.post(INFER, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == body["id"]


def test_fp16_out_of_range_is_400(http: httpx.Client) -> None:
    tensor = {**V2["inputs"][0], "datatype": "FP16", "data": [1.0, 70000.0, 3.0, 4.0]}
    _error(http.post(INFER, json={"inputs": [tensor]}), 400, "range of FP16")


def test_a_content_length_longer_than_the_body_is_408_then_closed(
        service: tuple[str, int]) -> None:
    """The client says 200 bytes and sends 60: the server waits the body timeout, not for
    ever."""
    body = json.dumps(V2).encode()
    received, seconds, closed = exchange(service[1], request(INFER, body[:60], 200))
    assert status_of(received) == 408, received
    assert b"connection: close" in received.lower() and closed
    assert BODY_TIMEOUT_S * 0.9 <= seconds < BODY_TIMEOUT_S * 3 + 2


def test_a_content_length_shorter_than_the_body_is_4xx(service: tuple[str, int]) -> None:
    """The client says 20 bytes and sends the whole body: the request ends early (a
    truncated body, never parsed as more than it is) and the rest is no valid request."""
    body = json.dumps(V2).encode()
    received, seconds, closed = exchange(service[1], request(INFER, body, 20), wait_s=8)
    statuses = [int(line.split(b" ")[1]) for line in received.split(b"\r\n")
                if line.startswith(b"HTTP/1.1 ")]
    assert statuses and all(400 <= status < 500 for status in statuses), received
    assert closed and seconds < 5, (seconds, received)


def test_a_header_trickle_is_cut_off(service: tuple[str, int]) -> None:
    head = request(INFER, json.dumps(V2).encode())
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", service[1]), timeout=10) as sock:
        received = b""
        for byte in head[:40]:  # a byte every 0.2 s: the headers never complete in time
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
            sock.settimeout(0.01)
            try:
                received += sock.recv(4096)
                break
            except TimeoutError:
                pass
    assert status_of(received) == 408, received
    assert time.monotonic() - start < BODY_TIMEOUT_S * 3 + 2


def test_a_connection_that_sends_nothing_is_closed(service: tuple[str, int]) -> None:
    received, seconds, closed = exchange(service[1], b"", wait_s=8)
    assert received == b"" and closed and seconds < BODY_TIMEOUT_S * 3


@pytest.mark.parametrize("method,path", [("GET", "/admin/status"), ("POST", "/admin/reload"),
                                         ("POST", "/admin/rollback")])
def test_admin_without_a_token_is_401_with_a_wrong_one_403(http: httpx.Client, method: str,
                                                           path: str) -> None:
    missing = http.request(method, path)
    _error(missing, 401, "Bearer")
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = http.request(method, path, headers={"authorization": "Bearer not-the-token-at-all"})
    _error(wrong, 403, "not this service's admin token")
    assert "www-authenticate" not in wrong.headers
    if method == "GET":
        ok = http.get(path, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert ok.status_code == 200 and ok.json()["serving"] == "3"

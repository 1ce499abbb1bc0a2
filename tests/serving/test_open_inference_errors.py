"""Malformed Open Inference Protocol requests: each a 4xx whose message names the problem.

The v2 error body is the protocol's ``{"error": message}``; none is a 5xx, none carries a
stack trace or a file path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

INFER = "/v2/models/synthetic/infer"
ROW = [1.0, 2.0, 3.0, 4.0]


def tensor(data: Any = ROW, shape: list[int] | None = None, datatype: str = "FP32",
           name: str = "features", **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape or [1, 4], "datatype": datatype, "data": data,
            **extra}


def check(response: Any, status: int, *named: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for text in named:
        assert text in message, message
    assert "Traceback" not in response.text and "/work/" not in response.text
    assert "site-packages" not in response.text
    return message


BINARY_TENSOR = {"name": "features", "shape": [1, 4], "datatype": "FP32"}  # no data
CASES: dict[str, tuple[dict[str, Any], int, list[str]]] = {
    "wrong-width": ({"inputs": [tensor(ROW[:3], [1, 3])]}, 400, ["shape must be [batch, 4]"]),
    "one-d-features": ({"inputs": [tensor(ROW, [4])]}, 400, ["shape must be [batch, 4]"]),
    "count-mismatch": ({"inputs": [tensor(ROW * 2, [1, 4])]}, 400, ["holds 4 values", "has 8"]),
    "nested-wrong-shape": ({"inputs": [tensor([[1, 2], [3, 4]], [1, 4])]}, 400,
                           ["nested data has shape [2, 2]"]),
    "ragged": ({"inputs": [tensor([[1, 2, 3, 4], [1, 2]], [2, 4])]}, 400, ["ragged"]),
    "bytes": ({"inputs": [tensor(["a", "b", "c", "d"], datatype="BYTES")]}, 400,
              ["'BYTES' is not accepted"]),
    "unknown-datatype": ({"inputs": [tensor(datatype="FLOAT")]}, 400, ["'FLOAT'"]),
    "strings-as-fp32": ({"inputs": [tensor(["1", "2", "3", "4"])]}, 400, ["not FP32"]),
    "null-value": ({"inputs": [tensor([1.0, None, 3.0, 4.0])]}, 400, ["not FP32"]),
    "bool-in-fp32": ({"inputs": [tensor([1.0, True, 3.0, 4.0])]}, 400, ["true/false"]),
    "float-in-int32": ({"inputs": [tensor([1.5, 2, 3, 4], datatype="INT32")]}, 400,
                       ["not INT32"]),
    "int32-overflow": ({"inputs": [tensor([2**40, 2, 3, 4], datatype="INT32")]}, 400,
                       ["out of the range of INT32"]),
    "fp32-overflow": ({"inputs": [tensor([1e39, 2, 3, 4])]}, 400, ["finite float32"]),
    "empty-batch": ({"inputs": [tensor([], [0, 4])]}, 400, ["batch is empty"]),
    "over-batch-limit": ({"inputs": [tensor(ROW * 101, [101, 4])]}, 413, ["101 rows", "100"]),
    "negative-dim": ({"inputs": [tensor(ROW, [-1, 4])]}, 400, ["negative dimension"]),
    "no-inputs": ({"inputs": []}, 400, ["inputs is empty"]),
    "unknown-input": ({"inputs": [tensor(name="pixels")]}, 400, ["unknown ['pixels']"]),
    "missing-feature": ({"inputs": [tensor([1.0], [1], name=n) for n in ("f0", "f1", "f2")]},
                        400, ["missing ['f3']"]),
    "per-feature-batch-mismatch": ({"inputs": [tensor([1.0] * (1 + (n == "f2")),
                                                      [1 + (n == "f2")], name=n)
                                               for n in ("f0", "f1", "f2", "f3")]},
                                   400, ["disagree on the batch size"]),
    "repeated-input": ({"inputs": [tensor(), tensor()]}, 400, ["repeat"]),
    "unknown-output": ({"inputs": [tensor()], "outputs": [{"name": "proba"}]}, 400,
                       ["unknown output(s) ['proba']"]),
    "binary-size-without-binary-data": (
        {"inputs": [{**BINARY_TENSOR, "parameters": {"binary_data_size": 16}}]}, 400,
        ["binary_data_size 16 runs past the 0 bytes of binary data sent"]),
    "binary-size-not-an-integer": (
        {"inputs": [{**BINARY_TENSOR, "parameters": {"binary_data_size": "16"}}]}, 400,
        ["binary_data_size must be a non-negative integer"]),
    "binary-size-and-data": ({"inputs": [tensor(parameters={"binary_data_size": 16})]}, 400,
                             ["has both 'data' and binary_data_size"]),
    "no-data": ({"inputs": [BINARY_TENSOR]}, 400, ["no data; send 'data' or binary data"]),
    "missing-inputs-field": ({"id": "x"}, 422, ["inputs: Field required"]),
    "missing-datatype": ({"inputs": [{"name": "features", "shape": [1, 4], "data": ROW}]},
                         422, ["inputs.0.datatype: Field required"]),
    "extra-top-level-field": ({"inputs": [tensor()], "model": "synthetic"}, 422,
                              ["model: Extra inputs"]),
    "shape-not-ints": ({"inputs": [tensor(shape=[1.5, 4])]}, 422, ["inputs.0.shape.0"]),
    "data-not-list": ({"inputs": [tensor(data=5)]}, 422, ["inputs.0.data"]),
}


@pytest.mark.parametrize(("body", "status", "named"), CASES.values(), ids=CASES.keys())
def test_malformed_infer_requests(client: TestClient, body: dict[str, Any], status: int,
                                  named: list[str]) -> None:
    check(client.post(INFER, json=body), status, *named)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_400(client: TestClient, literal: str) -> None:
    raw = json.dumps({"inputs": [tensor()]}).replace("2.0", literal)
    check(client.post(INFER, content=raw, headers={"content-type": "application/json"}),
          400, "finite")


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16", "INT64"])
def test_an_integer_beyond_float64_is_400_not_500(client: TestClient, datatype: str) -> None:
    """A JSON integer literal of 400 digits: Python parses it, no float can hold it."""
    raw = json.dumps({"inputs": [tensor(datatype=datatype)]}).replace("2.0", "1" + "0" * 400)
    check(client.post(INFER, content=raw, headers={"content-type": "application/json"}),
          400, "inputs[0]")


@pytest.mark.parametrize("value", [70000.0, -1e6])
def test_fp16_values_beyond_its_range_are_400(client: TestClient, value: float) -> None:
    check(client.post(INFER, json={"inputs": [tensor([1.0, value, 3.0, 4.0],
                                                     datatype="FP16")]}),
          400, "range of FP16")


def test_fp16_values_within_its_range_are_served(client: TestClient) -> None:
    response = client.post(INFER, json={"inputs": [tensor([1.0, 65504.0, 3.0, 4.0],
                                                          datatype="FP16")]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("content", "headers", "status", "named"), [
    ('{"inputs": [', {"content-type": "application/json"}, 422, ["not valid JSON"]),
    (json.dumps({"inputs": [tensor()]}), {"content-type": "text/csv"}, 415,
     ["application/json", "text/csv"]),
    (json.dumps({"inputs": [tensor()]}), {"content-type": "application/json",
                                          "inference-header-content-length": "999"}, 400,
     ["inference-header-content-length is 999, but the body holds only"]),
    (json.dumps({"inputs": [tensor()]}), {"inference-header-content-length": "-3"}, 400,
     ["must be a non-negative integer, got '-3'"]),
    (json.dumps({"inputs": [tensor()]}), {"content-type": "text/csv",
                                          "inference-header-content-length": "10"}, 415,
     ["application/octet-stream or JSON, got 'text/csv'"]),
], ids=["not-json", "wrong-content-type", "binary-header-past-the-body",
        "binary-header-negative", "binary-with-csv"])
def test_bad_bodies_and_headers(client: TestClient, content: str, headers: dict[str, str],
                                status: int, named: list[str]) -> None:
    check(client.post(INFER, content=content, headers=headers), status, *named)


def test_oversized_body_is_413_before_it_is_read(client: TestClient) -> None:
    huge = json.dumps({"inputs": [tensor(ROW * 5000, [5000, 4])]})
    assert len(huge) > 64 * 1024
    check(client.post(INFER, content=huge, headers={"content-type": "application/json"}),
          413, "over the limit of 65536 bytes")


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    """No Content-Length: the limit is counted while the body streams in."""
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ['
        for _ in range(20_000):
            yield b"1.0, "
        yield b"1.0]}]}"

    response = client.post(INFER, content=chunks(), headers={"content-type": "application/json"})
    check(response, 413, "over the limit of 65536 bytes")


@pytest.mark.parametrize(("path", "named"), [
    ("/v2/models/other/infer", ["'other' is not served", "serves 'synthetic'"]),
    ("/v2/models/synthetic/versions/9/infer", ["version '9'", "serving version 3"]),
])
def test_unknown_model_or_version_is_404(client: TestClient, path: str,
                                         named: list[str]) -> None:
    check(client.post(path, json={"inputs": [tensor()]}), 404, *named)
    check(client.get(path.removesuffix("/infer")), 404, *named)


def test_not_ready_is_503_on_every_v2_model_route(empty_client: TestClient) -> None:
    check(empty_client.post(INFER, json={"inputs": [tensor()]}), 503, "no model loaded")
    check(empty_client.get("/v2/models/synthetic"), 503, "no model loaded")
    check(empty_client.get("/v2/models/synthetic/ready"), 503, "no model loaded")
    assert empty_client.get("/v2").status_code == 200

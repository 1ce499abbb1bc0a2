"""The common v2 body parsed by simdjson (``mlops.serving.plain_request``) is read exactly as
the general path (pydantic, ``v2_protocol.to_matrix``) reads it, and every body the
general path would refuse or read differently is left to it (None)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops.serving import v2_protocol as v2
from mlops.serving.body import BadBody, as_utf8, validated
from mlops.serving.errors import BadInput
from mlops.serving.plain_request import plain_request

WIDTH, MAX_BATCH = 3, 64
# Long bodies (over 2 KB) take another scan for the structure than short ones.
LONG = np.random.default_rng(0).normal(size=(64, WIDTH)).tolist()
NAMES = ["a", "b", "c"]


def general(body: bytes, json_length: int | None = None
            ) -> tuple[v2.InferRequest, np.ndarray] | None:
    """What the app reads from the body, or None where it answers an error."""
    end = len(body) if json_length is None else json_length
    try:
        request = validated(as_utf8(body[:end], "utf-8"), v2.InferRequest)
        return request, v2.to_matrix(request, NAMES, MAX_BATCH, memoryview(body)[end:])
    except (RequestValidationError, BadBody, BadInput):
        return None


def same_reading(body: bytes, json_length: int | None = None
                 ) -> tuple[v2.InferRequest, np.ndarray] | None:
    """plain_request's reading of the body, checked against the general path's."""
    plain = plain_request(body, WIDTH, MAX_BATCH, json_length)
    if plain is not None:
        expected = general(body, json_length)
        assert expected is not None, f"taken, but the app refuses it: {body!r}"
        request, matrix = plain
        assert matrix.dtype == np.float32 and matrix.shape == expected[1].shape
        assert np.array_equal(matrix, expected[1]), body
        without_data = {"inputs": {0: {"data"}}}
        assert request.model_dump(exclude=without_data) == expected[0].model_dump(
            exclude=without_data)
    return plain


def body(rows: int = 1, data: Any = None, **extra: Any) -> bytes:
    tensor = {"name": "features", "shape": [rows, WIDTH], "datatype": "FP32",
              "data": [0.25, -1.5, 3.0] * rows if data is None else data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


@pytest.mark.parametrize("text", [
    body(),
    body(8),
    body(64, sum(LONG, [])),
    body(64, sum(LONG, []), id="a:b[c]", parameters={"x": [1, {"y": 2}]}),
    body(2, [1, 2, 3, 4, 5, 6]),  # JSON integers
    body(1, [1, 2.5, -0.0]),
    body(1, [16777217, 2 ** 53 + 1, 1e38]),  # rounded to float32 as the app rounds them
    body(1, [0.1, 1e-45, 3.4028234663852886e38]),
    body(2, id="req-1"),
    body(1, outputs=[{"name": "prediction"}], parameters={"note": "x: [y]"}),
    b' {"inputs" : [ {"data":[1,2,3], "datatype":"FP32", "shape":[1,3],'
    b' "name":"feat\\u0075res"} ] } ',  # other key order, spaces, an escaped name
], ids=["one-row", "eight-rows", "long", "long-with-extras", "integers", "mixed",
        "large-integers", "float32-edges", "id", "outputs-and-parameters", "reordered"])
def test_the_common_body_is_read_as_the_app_reads_it(text: bytes) -> None:
    assert same_reading(text) is not None


@pytest.mark.parametrize("text", [
    body(1, [[0.25, -1.5, 3.0]]),  # nested to the shape: the general path reads it
    body(3, [[1], [2], [3], [4], [5], [6], [7], [8], [9]]),  # nested singletons: refused
    body(1, [1, True, 2]),
    body(1, [1, None, 2]),
    body(1, [1, "2", 3]),
    body(1, [1, 2]),  # too few for the shape
    body(64, LONG),  # nested to the shape, long
    body(64, [[], *sum(LONG, [])[:-1], [0.5]]),  # nested, as many values as the shape
    body(64, sum(LONG, [])).replace(b'"datatype"', b'"id": "x", "datatype"'),
    body(1, [1e39, 0, 0]),  # beyond float32
    body(MAX_BATCH + 1),  # beyond the batch bound
    body(0, []),
    body(1, id=5),
    body(1, extra_key=1),
    body(1, outputs=[{"name": "prediction", "extra": 1}]),
    body(1, parameters={"binary_data_output": True}).replace(b"FP32", b"FP64"),
    b'{"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", '
    b'"data": [1, 2, 3], "data": [4, 5, 6]}]}',  # a repeated key
    b'{"id": "a", "id": "b", "inputs": [{"name": "features", "shape": [1, 3], '
    b'"datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"parameters": {"x": 1, "x": 2}, "inputs": [{"name": "features", "shape": [1, 3], '
    b'"datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", '
    b'"data": [1, 2, NaN]}]}',
    b'{"inputs": [{"name": "features", "shape": [1, 3.0], "datatype": "FP32", '
    b'"data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "features", "shape": [true, 3], "datatype": "FP32", '
    b'"data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", '
    b'"parameters": {}, "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "f\xffatures", "shape": [1, 3], "datatype": "FP32", '
    b'"data": [1, 2, 3]}]}',  # not UTF-8
    b"", b"[]", b"{}", b'{"inputs": []}', b'{"inputs": {}}',
    body(1) + b"x",
], ids=["nested", "nested-singletons", "bool", "null", "string", "short", "long-nested",
        "long-nested-balanced", "long-tensor-extra-key", "overflow", "over-batch",
        "empty-batch", "numeric-id", "extra-key", "extra-output-key",
        "fp64", "repeated-data", "repeated-id", "repeated-parameter", "nan", "float-shape",
        "bool-shape", "tensor-parameters", "not-utf8", "empty", "array", "empty-object",
        "no-inputs", "inputs-object", "trailing"])
def test_any_other_body_is_left_to_the_general_path(text: bytes) -> None:
    assert same_reading(text) is None


def binary(rows: np.ndarray, size: Any = None, **extra: Any) -> tuple[bytes, int]:
    """A body with the binary tensor data extension: the JSON, then the raw float32 rows."""
    raw = np.asarray(rows, dtype="<f4").tobytes()
    parameters = {"binary_data_size": len(raw) if size is None else size}
    header = json.dumps({"inputs": [{"name": "features", "shape": [len(rows), WIDTH],
                                     "datatype": "FP32", "parameters": parameters}],
                         **extra}).encode()
    return header + raw, len(header)


# Values whose float32 bytes hold a colon (0x3a) and a bracket (0x5b): the JSON's
# structure is checked in the JSON alone.
COLONS = np.frombuffer(b"\x3a\x5b\x3a\x3f" * WIDTH * 2, dtype="<f4").reshape(2, WIDTH)


@pytest.mark.parametrize(("text", "json_length"), [
    binary(np.array(LONG[:1])),
    binary(np.array(LONG)),
    binary(np.array(LONG), outputs=[{"name": "prediction", "parameters": {"binary_data": True}}]),
    binary(np.array(LONG[:2]), parameters={"binary_data_output": True}, id="x"),
    binary(COLONS),
], ids=["one-row", "long", "binary-output", "all-outputs-binary", "colon-bytes"])
def test_the_common_binary_body_is_read_as_the_app_reads_it(text: bytes,
                                                            json_length: int) -> None:
    assert same_reading(text, json_length) is not None


def _with(body_and_length: tuple[bytes, int], tail: bytes = b"",
          replace: tuple[bytes, bytes] = (b"", b"")) -> tuple[bytes, int]:
    body, length = body_and_length
    header = body[:length].replace(*replace)
    return header + body[length:] + tail, len(header)


@pytest.mark.parametrize(("text", "json_length"), [
    binary(np.array(LONG[:2]), size=4),  # claims less than was sent
    binary(np.array(LONG[:2]), size=10 ** 6),
    binary(np.array(LONG[:2]), size=24.0),
    binary(np.array(LONG[:2]), size=True),
    _with(binary(np.array(LONG[:2])), tail=b"\0\0\0\0"),  # bytes no input claims
    _with(binary(np.array(LONG[:2])),
          replace=(b'"binary_data_size"', b'"x": 1, "binary_data_size"')),
    _with(binary(np.array(LONG[:2])), replace=(b'{"binary_data_size": 24}', b"24")),
    _with(binary(np.array(LONG[:2])), replace=(b'{"binary_data_size": 24}', b"[24]")),
    _with(binary(np.array(LONG[:2])), replace=(b"FP32", b"FP16")),
    _with(binary(np.array(LONG[:2])), replace=(b'"shape"', b'"data": [1], "shape"')),
    _with(binary(np.array(LONG[:2])), replace=(b'"shape"', b'"id": "a", "id": "b", "shape"')),
    binary(np.array([[np.nan, 0, 0]])),
    binary(np.array([[np.inf, 0, 0]])),
], ids=["short-size", "long-size", "float-size", "bool-size", "unclaimed", "extra-parameter",
        "number-parameters", "list-parameters", "fp16", "data-and-binary", "repeated-key",
        "nan", "inf"])
def test_any_other_binary_body_is_left_to_the_general_path(text: bytes, json_length: int) -> None:
    assert same_reading(text, json_length) is None


def test_a_remembered_binary_header_still_has_its_bytes_checked() -> None:
    """The reading of a binary header is remembered; the bytes after it are not."""
    good = binary(np.array(LONG[:2]), outputs=[{"name": "prediction"}])
    nan = binary(np.array([[np.nan] * WIDTH] * 2), outputs=[{"name": "prediction"}])
    assert good[0][:good[1]] == nan[0][:nan[1]]  # the same header
    assert same_reading(*good) is not None
    assert same_reading(*nan) is None
    assert same_reading(good[0] + b"\0\0\0\0", good[1]) is None
    assert same_reading(good[0][:-4], good[1]) is None
    assert same_reading(*good) is not None


_ANYTHING = st.one_of(
    st.floats(width=64), st.integers(min_value=-2 ** 70, max_value=2 ** 70), st.booleans(),
    st.none(), st.text(max_size=3), st.lists(st.floats(allow_nan=False), max_size=2))
_FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
_EXTRA = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(max_size=6), st.integers()),
    "parameters": st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.text()),
                                  max_size=2),
    "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["prediction", "x"])}),
                        max_size=1),
    "other": st.integers()})


@settings(max_examples=400, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(_FLOAT32 | st.integers(-2 ** 40, 2 ** 40), min_size=WIDTH,
                              max_size=WIDTH), min_size=1, max_size=MAX_BATCH),
       anything=st.none() | st.lists(_ANYTHING, max_size=30),
       shape=st.none() | st.lists(st.integers(-1, MAX_BATCH + 1), min_size=1, max_size=3),
       extra=_EXTRA)
def test_random_bodies_are_read_as_the_app_reads_them_or_left_to_it(
        rows: list[list[float]], anything: list[Any] | None, shape: list[int] | None,
        extra: dict[str, Any]) -> None:
    """Mostly the lane's case (numbers to the shape, an id, parameters, outputs), and now
    and then any values, any shape or a key the model does not have."""
    data = [value for row in rows for value in row] if anything is None else anything
    text = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "data": data,
                                   "shape": [len(rows), WIDTH] if shape is None else shape}],
                       **extra}).encode()
    same_reading(text)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(rows=st.lists(st.lists(_FLOAT32, min_size=WIDTH, max_size=WIDTH), min_size=1,
                     max_size=MAX_BATCH),
       size=st.none() | st.integers(-1, 4 * WIDTH * MAX_BATCH + 4) | st.floats(),
       tail=st.binary(max_size=5), extra=_EXTRA)
def test_random_binary_bodies_are_read_as_the_app_reads_them_or_left_to_it(
        rows: list[list[float]], size: Any, tail: bytes, extra: dict[str, Any]) -> None:
    body, length = binary(np.array(rows, dtype=np.float32), size, **extra)
    same_reading(body + tail, length)

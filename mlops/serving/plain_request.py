"""The common v2 infer body parsed by simdjson straight into the model's matrix.

pydantic, like every JSON parser that builds Python objects, makes one Python float per
value, which numpy then reads back one by one: for a 64-row request that is most of what
the request costs. simdjson checks the whole body without building objects and hands a
flat array of numbers over as one buffer of doubles.

Only the common body is taken here: one ``features`` FP32 tensor of flat JSON numbers,
with or without ``id``, ``parameters`` and ``outputs``. For anything else the answer is
None and the general path (``body.validated``, ``v2_protocol.to_matrix``) parses the body
and names what is wrong. What is taken here, the general path would accept with the same
values: everything but the data is validated by the same ``InferRequest`` model, and a
repeated key, a nested or non-numeric value or a value beyond float32 is left to it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import orjson
import simdjson
from pydantic import ValidationError

from mlops.serving.v2_protocol import InferRequest, all_finite

_JSON_KEYS = ["data", "datatype", "name", "shape"]  # sorted
_BINARY_KEYS = ["datatype", "name", "parameters", "shape"]
_FLOAT32 = np.dtype("<f4")  # as the binary extension sends it


def plain_request(body: bytes, width: int, max_batch: int, json_length: int | None = None
                  ) -> tuple[InferRequest, np.ndarray] | None:
    """The request (its input's data left out) and its [rows, width] float32 matrix, or
    None when the body is not the common one. ``json_length``: the binary tensor data
    extension's header, the length of the JSON before the tensor's raw bytes."""
    binary = json_length is not None
    text = body[:json_length] if binary else body
    try:
        # A parser per body (60 ns): a document holds its parser until it is released.
        doc = simdjson.Parser().parse(text)
    except (ValueError, RuntimeError):  # not JSON, not UTF-8, an integer beyond 64 bits
        return None
    if type(doc) is not simdjson.Object or "inputs" not in doc:
        return None
    inputs = doc["inputs"]
    if type(inputs) is not simdjson.Array or len(inputs) != 1:
        return None
    tensor = inputs[0]
    if type(tensor) is not simdjson.Object \
            or sorted(tensor.keys()) != (_BINARY_KEYS if binary else _JSON_KEYS) \
            or tensor["name"] != "features" or tensor["datatype"] != "FP32":
        return None
    shape = tensor["shape"]
    if type(shape) is not simdjson.Array:
        return None
    shape = shape.as_list()
    rows = shape[0] if len(shape) == 2 and type(shape[0]) is type(shape[1]) is int else 0
    if not (0 < rows <= max_batch and shape[1] == width):
        return None
    skeleton = {"name": "features", "shape": shape, "datatype": "FP32"}
    if binary:
        skeleton["parameters"] = _python(tensor["parameters"])
        values = _binary_values(body, json_length, skeleton["parameters"], rows * width)
    else:
        values = _json_values(tensor["data"], rows * width)
    if values is None or not all_finite(values):
        return None
    extra = {key: _python(doc[key]) for key in doc.keys() if key != "inputs"}
    whole = {**extra, "inputs": [skeleton]}
    if not _same_structure(text, whole, 0 if binary else 1):
        return None
    try:
        request = InferRequest.model_validate(whole) if extra or binary else _bare(rows, width)
    except ValidationError:
        return None
    return request, values.reshape(shape)


def _json_values(data: Any, count: int) -> np.ndarray | None:
    """The data array's numbers as float32, when it holds ``count`` numbers (a flat array:
    ``_same_structure`` rules out nested ones)."""
    if type(data) is not simdjson.Array or len(data) != count:
        return None
    try:
        values = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # a value that is not a number (bool, null, string)
        return None
    return values.astype(np.float32) if len(values) == count else None


def _binary_values(body: bytes, json_length: int, parameters: Any, count: int
                   ) -> np.ndarray | None:
    """The raw little-endian float32 values after the JSON, when the tensor claims them all
    (``binary_data_size``, and nothing else in its parameters) and they are ``count``."""
    if type(parameters) is not dict or len(parameters) != 1:
        return None
    size = parameters.get("binary_data_size")
    if type(size) is not int or size != len(body) - json_length or size != count * 4:
        return None
    return np.frombuffer(body, dtype=_FLOAT32, offset=json_length).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _bare(rows: int, width: int) -> InferRequest:
    """The request of a body that holds its inputs alone, by shape: the same for every such
    body, so validated once (the lane only reads it)."""
    return InferRequest.model_validate({"inputs": [
        {"name": "features", "shape": [rows, width], "datatype": "FP32"}]})


def _python(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _same_structure(text: bytes, whole: dict[str, Any], data_arrays: int) -> bool:
    """Whether the JSON text holds what was read (and, with ``data_arrays``, one flat data
    array), nothing more.

    Every key is followed by one colon and every array opens with one bracket. The text
    serialised again without its data has one key ("data") and one array fewer, unless a
    key repeated within an object (kept once in a dict), the data nested lists (which the
    buffer flattens), or a string held an escaped colon or bracket: each of those is left
    to the general path, which refuses the first two and reads the third.
    """
    again = orjson.dumps(whole)
    return (_occurs(text, b":", again.count(b":") + data_arrays)
            and _occurs(text, b"[", again.count(b"[") + data_arrays))


def _occurs(text: bytes, char: bytes, times: int) -> bool:
    """Whether ``char`` occurs exactly ``times`` times: on a long body a few memchr scans,
    several times faster than counting (which is faster on a short one)."""
    if len(text) < 2048:
        return text.count(char) == times
    at = -1
    for _ in range(times):
        at = text.find(char, at + 1)
        if at < 0:
            return False
    return text.find(char, at + 1) < 0

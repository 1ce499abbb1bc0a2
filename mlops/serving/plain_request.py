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

_TENSOR_KEYS = ["data", "datatype", "name", "shape"]  # sorted


def plain_request(body: bytes, width: int, max_batch: int
                  ) -> tuple[InferRequest, np.ndarray] | None:
    """The request (its input's data left out) and its [rows, width] float32 matrix, or
    None when the body is not the common one."""
    try:
        # A parser per body (60 ns): a document holds its parser until it is released.
        doc = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):  # not JSON, not UTF-8, an integer beyond 64 bits
        return None
    if type(doc) is not simdjson.Object or "inputs" not in doc:
        return None
    inputs = doc["inputs"]
    if type(inputs) is not simdjson.Array or len(inputs) != 1:
        return None
    tensor = inputs[0]
    if type(tensor) is not simdjson.Object or sorted(tensor.keys()) != _TENSOR_KEYS \
            or tensor["name"] != "features" or tensor["datatype"] != "FP32":
        return None
    shape, data = tensor["shape"], tensor["data"]
    if type(shape) is not simdjson.Array or type(data) is not simdjson.Array:
        return None
    shape = shape.as_list()
    rows = shape[0] if len(shape) == 2 and type(shape[0]) is type(shape[1]) is int else 0
    if not (0 < rows <= max_batch and shape[1] == width and len(data) == rows * width):
        return None
    try:
        values = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # a value that is not a number (bool, null, string)
        return None
    skeleton = {"name": "features", "shape": shape, "datatype": "FP32"}
    extra = {key: _python(doc[key]) for key in doc.keys() if key != "inputs"}
    if not _same_structure(body, {**extra, "inputs": [skeleton]}):
        return None
    matrix = values.astype(np.float32)
    if len(matrix) != len(data) or not all_finite(matrix):
        return None
    try:
        request = (InferRequest.model_validate({**extra, "inputs": [skeleton]}) if extra
                   else _bare(rows, width))
    except ValidationError:
        return None
    return request, matrix.reshape(shape)


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


def _same_structure(body: bytes, whole: dict[str, Any]) -> bool:
    """Whether the body holds what was read and one flat data array, nothing more.

    Every key is followed by one colon and every array opens with one bracket. The body
    serialised again without its data has one key ("data") and one array fewer, unless a
    key repeated within an object (kept once in a dict), the data nested lists (which the
    buffer flattens), or a string held an escaped colon or bracket: each of those is left
    to the general path, which refuses the first two and reads the third.
    """
    again = orjson.dumps(whole)
    return (_occurs(body, b":", again.count(b":") + 1)
            and _occurs(body, b"[", again.count(b"[") + 1))


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

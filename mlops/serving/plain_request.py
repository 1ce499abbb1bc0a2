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
_HEADERS_KEPT = 256  # binary-extension headers remembered (then forgotten all at once)
_headers: dict[tuple[bytes, int, int], tuple[InferRequest, list[int]]] = {}


def plain_request(body: bytes, width: int, max_batch: int, json_length: int | None = None
                  ) -> tuple[InferRequest, np.ndarray] | None:
    """The request (its input's data left out) and its [rows, width] float32 matrix, or
    None when the body is not the common one. ``json_length``: the binary tensor data
    extension's header, the length of the JSON before the tensor's raw bytes."""
    if json_length is None:
        return _json_request(body, width, max_batch)
    return _binary_request(body, json_length, width, max_batch)


def _json_request(body: bytes, width: int, max_batch: int
                  ) -> tuple[InferRequest, np.ndarray] | None:
    read = _read(body, width, max_batch, _JSON_KEYS)
    if read is None:
        return None
    tensor, skeleton, extra = read
    shape = skeleton["shape"]
    values = _json_values(tensor["data"], shape[0] * width)
    if values is None or not all_finite(values) \
            or not _same_structure(body, {**extra, "inputs": [skeleton]}, 1):
        return None
    try:
        request = (InferRequest.model_validate({**extra, "inputs": [skeleton]}) if extra
                   else _bare(shape[0], width))
    except ValidationError:
        return None
    return request, values.reshape(shape)


def _binary_request(body: bytes, json_length: int, width: int, max_batch: int
                    ) -> tuple[InferRequest, np.ndarray] | None:
    """With the binary extension a client sends the same JSON header again and again (only
    the raw bytes after it change): its reading is remembered."""
    key = (body[:json_length], width, max_batch)
    known = _headers.get(key)
    if known is None:
        known = _binary_header(key[0], width, max_batch)
        if known is None:
            return None
        if len(_headers) >= _HEADERS_KEPT:
            _headers.clear()
        _headers[key] = known
    request, shape = known
    if len(body) - json_length != shape[0] * width * _FLOAT32.itemsize:
        return None
    values = np.frombuffer(body, dtype=_FLOAT32, offset=json_length).astype(np.float32)
    return (request, values.reshape(shape)) if all_finite(values) else None


def _binary_header(header: bytes, width: int, max_batch: int
                   ) -> tuple[InferRequest, list[int]] | None:
    """The request and shape of a header whose one tensor claims all the bytes after it
    (``binary_data_size`` the only parameter, of the shape's size)."""
    read = _read(header, width, max_batch, _BINARY_KEYS)
    if read is None:
        return None
    tensor, skeleton, extra = read
    shape = skeleton["shape"]
    parameters = skeleton["parameters"] = _python(tensor["parameters"])
    if type(parameters) is not dict or len(parameters) != 1:
        return None
    size = parameters.get("binary_data_size")
    if type(size) is not int or size != shape[0] * width * _FLOAT32.itemsize:
        return None
    whole = {**extra, "inputs": [skeleton]}
    if not _same_structure(header, whole, 0):
        return None
    try:
        return InferRequest.model_validate(whole), shape
    except ValidationError:
        return None


def _read(text: bytes, width: int, max_batch: int, keys: list[str]
          ) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
    """The one tensor (a proxy into the parsed document), its name, shape and datatype,
    and the request's other members, when the tensor has exactly ``keys`` (sorted), is the
    FP32 'features' tensor and its shape is [1..max_batch, width]."""
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
    if type(tensor) is not simdjson.Object or sorted(tensor.keys()) != keys \
            or tensor["name"] != "features" or tensor["datatype"] != "FP32" \
            or type(tensor["shape"]) is not simdjson.Array:
        return None
    shape = tensor["shape"].as_list()
    rows = shape[0] if len(shape) == 2 and type(shape[0]) is type(shape[1]) is int else 0
    if not (0 < rows <= max_batch and shape[1] == width):
        return None
    extra = {key: _python(doc[key]) for key in doc.keys() if key != "inputs"}
    return tensor, {"name": "features", "shape": shape, "datatype": "FP32"}, extra


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

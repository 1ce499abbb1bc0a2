"""The Open Inference Protocol (KServe v2) over REST: its JSON bodies, tensor parsing and
the binary tensor data extension.

A request's inputs are JSON lists or, with the binary tensor data extension (as Triton
and KServe implement it, and tritonclient uses by default), raw little-endian bytes after
the JSON: the ``Inference-Header-Content-Length`` header gives the JSON's length and each
binary input's ``binary_data_size`` parameter its share of the rest, in input order. An
output is answered in binary when the request asks (``binary_data_output`` for all, an
output's ``binary_data`` for one). Values are checked and assembled into the model's
matrix by ``mlops.serving.tensors``, the same path gRPC takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from mlops.serving.errors import BadInput
from mlops.serving.tensors import (
    DTYPES,
    Tensor,
    assemble,
    check_shape,
    checked_values,
    dtype_of,
    finite32,
    in_range,
    label_datatype,
    output_arrays,
    output_names,
    raw_values,
    select_outputs,
    tensor_bytes,
)

_NUMBERS = {int, float}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Strict):
    name: str
    shape: list[StrictInt]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="Row-major values, flat or nested to "
                                   "the shape (absent when sent as binary data).")


class RequestOutput(_Strict):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(_Strict):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ResponseOutput(TensorMetadata):
    parameters: dict[str, Any] | None = None
    data: list[float | int | str] | list[list[float]] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(description="feature_names, task and sha256.")


class ModelReady(BaseModel):
    name: str
    ready: bool


def model_metadata(name: str, version: str, feature_names: list[str],
                   task: str, sha256: str,
                   classes: list[int | str] | None = None) -> ModelMetadata:
    """A multiclass model's prediction is [batch, classes] and its label a class name."""
    shape = [-1] if classes is None else [-1, len(classes)]
    outputs = [TensorMetadata(name="prediction", datatype="FP32", shape=shape)]
    if task != "regression":
        outputs.append(TensorMetadata(name="label", datatype=label_datatype(classes),
                                      shape=[-1]))
    parameters: dict[str, Any] = {"feature_names": feature_names, "task": task,
                                  "sha256": sha256}
    if classes is not None:
        parameters["classes"] = classes
    return ModelMetadata(
        name=name, versions=[version], platform="onnxruntime_onnx",
        inputs=[TensorMetadata(name="features", datatype="FP32",
                               shape=[-1, len(feature_names)])],
        outputs=outputs, parameters=parameters)


def _json_values(index: int, tensor: RequestInput) -> np.ndarray:
    """The tensor's JSON values as a flat float32 array, checked against shape and datatype."""
    where, data = f"inputs[{index}] ({tensor.name!r})", tensor.data or []
    dtype_of(where, tensor.datatype)
    check_shape(where, tensor.shape)
    types = set(map(type, data))  # one C-level pass
    if types <= _NUMBERS and tensor.datatype[0] == "F" and len(data) == math.prod(
            tensor.shape):  # the common case: flat JSON numbers for a float tensor
        try:
            values = np.array(data, dtype=np.float32)
        except OverflowError:  # a JSON integer beyond float64 cannot even be cast
            raise BadInput(f"{where}: a value is beyond the range of {tensor.datatype}") from None
        return in_range(where, tensor.datatype, finite32(where, values))
    if tensor.datatype != "BOOL" and (bool in types or (list in types and _has_bool(data))):
        raise BadInput(f"{where}: data holds true/false, which is not {tensor.datatype}; "
                       "declare BOOL or send numbers")
    try:
        values = np.array(data)
    except ValueError:
        raise BadInput(f"{where}: data is ragged; it must be flat or nested to the shape "
                       f"{tensor.shape}") from None
    if values.dtype.kind in "fO" and tensor.datatype[0] in "IU" and _all_ints(data):
        # numpy reads ints beyond int64 (UINT64's upper half) among others as floats
        try:
            values = np.array(data, dtype=DTYPES[tensor.datatype])
        except OverflowError:
            raise BadInput(f"{where}: a value is out of the range of {tensor.datatype}") from None
    if values.ndim > 1 and list(values.shape) != tensor.shape:
        raise BadInput(f"{where}: nested data has shape {list(values.shape)}, the declared "
                       f"shape is {tensor.shape}")
    values = values.reshape(-1)
    expected = math.prod(tensor.shape)
    if values.size != expected:
        raise BadInput(f"{where}: shape {tensor.shape} holds {expected} values, data has "
                       f"{values.size}")
    return checked_values(where, tensor.datatype, values)


def _all_ints(data: list[Any]) -> bool:
    """Every value, at any depth, a JSON integer (not a boolean)."""
    return all(_all_ints(v) if isinstance(v, list) else type(v) is int for v in data)


def _has_bool(data: list[Any]) -> bool:
    """numpy turns [1, true] into [1, 1]; JSON booleans are not numbers here."""
    types = set(map(type, data))  # one C-level pass: 3x faster than testing each value
    return bool in types or (list in types and any(_has_bool(v) for v in data
                                                   if isinstance(v, list)))


def _binary_size(where: str, tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise BadInput(f"{where}: binary_data_size must be a non-negative integer, is {size!r}")
    return size


def request_tensors(request: InferRequest, binary: bytes | memoryview = b"") -> list[Tensor]:
    """The request's inputs, JSON or binary (``binary``: the bytes after the JSON)."""
    tensors, offset = [], 0
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}] ({tensor.name!r})"
        size = _binary_size(where, tensor)
        if size is None:
            if tensor.data is None:
                raise BadInput(f"{where}: no data; send 'data' or binary data with its "
                               "binary_data_size parameter")
            decode = partial(_json_values, index, tensor)
        else:
            if tensor.data is not None:
                raise BadInput(f"{where}: has both 'data' and binary_data_size; send one")
            if offset + size > len(binary):
                raise BadInput(f"{where}: binary_data_size {size} runs past the "
                               f"{len(binary)} bytes of binary data sent")
            decode = partial(raw_values, where, tensor.datatype, tensor.shape,
                             binary[offset:offset + size])
            offset += size
        tensors.append(Tensor(tensor.name, tensor.shape, decode))
    if offset != len(binary):
        raise BadInput(f"{len(binary) - offset} bytes of binary data are not claimed by any "
                       "input's binary_data_size")
    return tensors


def to_matrix(request: InferRequest, feature_names: Sequence[str], max_batch: int,
              binary: bytes | memoryview = b"") -> np.ndarray:
    """The [batch, n_features] float32 matrix of a request, in the model's feature order."""
    if not binary and len(request.inputs) == 1:
        matrix = _plain_features(request.inputs[0], len(feature_names), max_batch)
        if matrix is not None:
            return matrix
    return assemble(request_tensors(request, binary), feature_names, max_batch)


def all_finite(values: np.ndarray) -> bool:
    """Every float32 value finite. A sum of float32 values in float64 cannot overflow, so it
    is finite exactly when they all are; for a few values Python's own sum is the fastest."""
    if values.size <= 64:
        return math.isfinite(sum(values.tolist()))
    return bool(np.isfinite(values).all())


def _plain_features(tensor: RequestInput, width: int, max_batch: int) -> np.ndarray | None:
    """The common request in one step: a 'features' FP32 tensor of flat JSON numbers, all
    finite, of a valid shape. None for anything else, which the general path checks (and
    names what is wrong)."""
    data, shape = tensor.data, tensor.shape
    if (tensor.name != "features" or tensor.datatype != "FP32" or data is None
            or tensor.parameters or len(shape) != 2 or shape[1] != width
            or not 0 < shape[0] <= max_batch or len(data) != shape[0] * width
            or not set(map(type, data)) <= _NUMBERS):
        return None
    try:
        values = np.array(data, dtype=np.float32)
    except OverflowError:
        return None
    if not all_finite(values):
        return None
    return values.reshape(shape)


def selected_outputs(request: InferRequest, task: str) -> list[str]:
    return select_outputs([o.name for o in request.outputs or []], task)


def binary_outputs(request: InferRequest) -> set[str]:
    """The outputs to answer as binary data: all when ``binary_data_output`` is set, unless
    an output says ``binary_data: false``; else those whose ``binary_data`` is set."""
    every = bool((request.parameters or {}).get("binary_data_output"))
    chosen = {o.name: (o.parameters or {}).get("binary_data") for o in request.outputs or []}
    if every:
        return {name for name in output_names("classification")
                if chosen.get(name) is not False}
    return {name for name, flag in chosen.items() if flag}


def infer_response(name: str, version: str, request_id: str | None, wanted: list[str],
                   scores: np.ndarray, labels: Sequence[int] | np.ndarray | None) -> dict[str, Any]:
    """The JSON response body as plain data (serialised by orjson; numpy passes through)."""
    tensors = {"prediction": ("FP32", scores), "label": (label_datatype(labels), labels)}
    shapes = {"prediction": list(np.shape(scores)), "label": [len(scores)]}
    outputs = [{"name": out, "datatype": tensors[out][0], "shape": shapes[out],
                "data": tensors[out][1]} for out in wanted]
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    return body


def binary_response(name: str, version: str, request_id: str | None, wanted: list[str],
                    scores: np.ndarray, labels: Sequence[int] | np.ndarray | None,
                    binary: set[str]) -> tuple[bytes, int]:
    """The body with the binary tensor data extension and its JSON header's length."""
    outputs, chunks = [], []
    for out, datatype, values in output_arrays(wanted, scores, labels):
        tensor: dict[str, Any] = {"name": out, "datatype": datatype,
                                  "shape": list(values.shape)}
        if out in binary:
            chunks.append(tensor_bytes(datatype, values))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = values.tolist() if datatype == "BYTES" else values
        outputs.append(tensor)
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return header + b"".join(chunks), len(header)

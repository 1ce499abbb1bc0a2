"""The Open Inference Protocol (KServe v2) over REST: its JSON bodies and tensor parsing.

A request carries either one input ``features`` of shape [batch, n_features], or one
input per feature name of shape [batch] (or [batch, 1]), in any numeric datatype (FP16,
FP32, FP64, INT8-64, UINT8-64, BOOL as 0/1). Values are checked against the declared
shape and datatype, must be finite in float32, and are cast to the model's float32.
BYTES is refused: every model input is numeric. The binary tensor data extension is
refused with a 400 too (JSON tensors only), because the models are small tabular ones
whose requests are a few hundred numbers: JSON costs microseconds there, and a second
wire format would double the surface to validate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from mlops.serving.errors import BadInput, check_rows

BINARY_HEADER = b"inference-header-content-length"  # as ASGI spells header names
_NUMBERS = {int, float}
_FP16_MAX = float(np.finfo(np.float16).max)
# Casting a value beyond float32's range gives inf, which _finite32 refuses with a 400;
# numpy's warning about it would only repeat that in the log (np.errstate per request
# cost more than the cast).
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning, __name__)
_DTYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Strict):
    name: str
    shape: list[StrictInt]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="Row-major values, flat or nested to the shape.")


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
    data: list[float | int]


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


def output_names(task: str) -> list[str]:
    return ["prediction", "label"] if task == "classification" else ["prediction"]


def model_metadata(name: str, version: str, feature_names: list[str],
                   task: str, sha256: str) -> ModelMetadata:
    outputs = [TensorMetadata(name="prediction", datatype="FP32", shape=[-1])]
    if task == "classification":
        outputs.append(TensorMetadata(name="label", datatype="INT64", shape=[-1]))
    return ModelMetadata(
        name=name, versions=[version], platform="onnxruntime_onnx",
        inputs=[TensorMetadata(name="features", datatype="FP32",
                               shape=[-1, len(feature_names)])],
        outputs=outputs, parameters={"feature_names": feature_names, "task": task,
                                     "sha256": sha256})


def _refuse_binary(request: InferRequest) -> None:
    flags = [request.parameters or {}, *[(o.parameters or {}) for o in request.outputs or []],
             *[(i.parameters or {}) for i in request.inputs]]
    if any(key.startswith("binary_data") and value for f in flags for key, value in f.items()):
        raise BadInput("the binary tensor data extension is not supported; send JSON tensors "
                       "(drop the binary_data parameters)")


def _values(index: int, tensor: RequestInput) -> np.ndarray:
    """The tensor's values as a flat float32 array, checked against shape and datatype."""
    where = f"inputs[{index}] ({tensor.name!r})"
    dtype = _DTYPES.get(tensor.datatype)
    if dtype is None:
        accepted = ", ".join(_DTYPES)
        raise BadInput(f"{where}: datatype {tensor.datatype!r} is not accepted; the model "
                       f"takes numbers: {accepted}")
    if any(size < 0 for size in tensor.shape):
        raise BadInput(f"{where}: shape {tensor.shape} has a negative dimension")
    types = set(map(type, tensor.data))  # one C-level pass
    if types <= _NUMBERS and tensor.datatype[0] == "F" and len(tensor.data) == math.prod(
            tensor.shape):  # the common case: flat JSON numbers for a float tensor
        try:
            values = np.array(tensor.data, dtype=np.float32)
        except OverflowError:  # a JSON integer beyond float64 cannot even be cast
            raise BadInput(f"{where}: a value is beyond the range of {tensor.datatype}") from None
        return _in_range(where, tensor.datatype, _finite32(where, values))
    if tensor.datatype != "BOOL" and (bool in types or (list in types and _has_bool(
            tensor.data))):
        raise BadInput(f"{where}: data holds true/false, which is not {tensor.datatype}; "
                       "declare BOOL or send numbers")
    try:
        values = np.array(tensor.data)
    except ValueError:
        raise BadInput(f"{where}: data is ragged; it must be flat or nested to the shape "
                       f"{tensor.shape}") from None
    if values.ndim > 1 and list(values.shape) != tensor.shape:
        raise BadInput(f"{where}: nested data has shape {list(values.shape)}, the declared "
                       f"shape is {tensor.shape}")
    values = values.reshape(-1)
    expected = math.prod(tensor.shape)
    if values.size != expected:
        raise BadInput(f"{where}: shape {tensor.shape} holds {expected} values, data has "
                       f"{values.size}")
    return _cast(where, tensor.datatype, dtype, values)


def _cast(where: str, datatype: str, dtype: type[np.generic], values: np.ndarray) -> np.ndarray:
    kinds = {"BOOL": "b"}.get(datatype, "iu" if datatype[0] in "IU" else "iuf")
    if values.size and values.dtype.kind not in kinds:
        raise BadInput(f"{where}: data holds values that are not {datatype} "
                       f"(e.g. {values.tolist()[:1]!r}); send JSON numbers of that type")
    if values.dtype.kind in "iu" and dtype not in (np.float16, np.float32, np.float64):
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise BadInput(f"{where}: a value is out of the range of {datatype}")
    return _in_range(where, datatype, _finite32(where, values))


def _in_range(where: str, datatype: str, values: np.ndarray) -> np.ndarray:
    """FP16 values are cast to the model's float32, so one beyond FP16's range would pass
    unnoticed: refused, as the declared type cannot hold it."""
    if datatype == "FP16" and values.size and np.abs(values).max() > _FP16_MAX:
        raise BadInput(f"{where}: a value is out of the range of FP16 (|x| <= {_FP16_MAX:g})")
    return values


def _finite32(where: str, values: np.ndarray) -> np.ndarray:
    as_float = values.astype(np.float32)  # beyond float32's range becomes inf: refused below
    if not np.isfinite(as_float).all():
        raise BadInput(f"{where}: values must be finite float32 numbers (no NaN or Infinity)")
    return as_float


def _has_bool(data: list[Any]) -> bool:
    """numpy turns [1, true] into [1, 1]; JSON booleans are not numbers here."""
    types = set(map(type, data))  # one C-level pass: 3x faster than testing each value
    return bool in types or (list in types and any(_has_bool(v) for v in data
                                                   if isinstance(v, list)))


def to_matrix(request: InferRequest, feature_names: Sequence[str], max_batch: int) -> np.ndarray:
    """The [batch, n_features] float32 matrix of a request, in the model's feature order."""
    _refuse_binary(request)
    if not request.inputs:
        raise BadInput("inputs is empty; send the 'features' tensor or one tensor per feature")
    names = [tensor.name for tensor in request.inputs]
    if len(set(names)) != len(names):
        raise BadInput(f"input names repeat: {names}")
    if names == ["features"]:
        return _features_tensor(request.inputs[0], len(feature_names), max_batch)
    unknown = sorted(set(names) - set(feature_names))
    missing = [name for name in feature_names if name not in names]
    if unknown or missing:
        raise BadInput(f"inputs must be 'features' or one per feature {list(feature_names)}; "
                       f"unknown {unknown}, missing {missing}")
    by_name = {tensor.name: (i, tensor) for i, tensor in enumerate(request.inputs)}
    rows = {tuple(t.shape[:1]) for t in request.inputs}
    columns = []
    for name in feature_names:
        index, tensor = by_name[name]
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ([], [1]):
            raise BadInput(f"inputs[{index}] ({name!r}): shape must be [batch] or [batch, 1], "
                           f"is {tensor.shape}")
        columns.append(_values(index, tensor))
    if len(rows) != 1:
        raise BadInput(f"per-feature inputs disagree on the batch size: {sorted(rows)}")
    _check_batch(len(columns[0]), max_batch)
    return np.column_stack(columns)


def _features_tensor(tensor: RequestInput, width: int, max_batch: int) -> np.ndarray:
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise BadInput(f"inputs[0] ('features'): shape must be [batch, {width}], "
                       f"is {tensor.shape}")
    _check_batch(tensor.shape[0], max_batch)
    return _values(0, tensor).reshape(tensor.shape)


def _check_batch(rows: int, max_batch: int) -> None:
    if rows == 0:
        raise BadInput("the batch is empty; send at least one row")
    check_rows(rows, max_batch, "rows")


def selected_outputs(request: InferRequest, task: str) -> list[str]:
    available = output_names(task)
    if not request.outputs:
        return available
    wanted = [output.name for output in request.outputs]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise BadInput(f"unknown output(s) {unknown}; this model has {available}")
    return wanted


def infer_response(name: str, version: str, request_id: str | None, wanted: list[str],
                   scores: np.ndarray, labels: list[int] | None) -> dict[str, Any]:
    """The response body as plain data (serialised by orjson; numpy arrays pass through)."""
    tensors = {"prediction": ("FP32", scores), "label": ("INT64", labels)}
    outputs = [{"name": out, "datatype": tensors[out][0], "shape": [len(scores)],
                "data": tensors[out][1]} for out in wanted]
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    return body

"""A ModelInfer message's tensors: its inputs decoded, its outputs encoded (pure).

An input's values travel either as raw little-endian bytes (``raw_input_contents``, one
entry per input in input order: what tritonclient.grpc sends) or typed
(``InferTensorContents``, the field of the input's datatype). The Open Inference Protocol
allows one way per request, so mixing them is refused. Decoded values go through
``mlops.serving.tensors``, the checks and matrix assembly REST uses, so both protocols
accept and refuse the same tensors with the same messages.

Outputs answer the way the inputs came: raw bytes in ``raw_output_contents`` after raw
inputs (tritonclient's ``InferResult.as_numpy`` reads only those for numeric outputs),
typed contents after typed inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from mlops.serving.errors import BadInput
from mlops.serving.grpc import grpc_predict_v2_pb2 as pb
from mlops.serving.tensors import (
    Tensor,
    assemble,
    check_shape,
    checked_values,
    dtype_of,
    raw_values,
    tensor_bytes,
)

# The InferTensorContents field of each datatype and the numpy type its values arrive in.
# FP16 has none (raw contents only), BYTES is refused as on REST (``dtype_of``).
TYPED_FIELDS: dict[str, tuple[str, type[np.generic]]] = {
    "BOOL": ("bool_contents", np.bool_), "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32), "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64), "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32), "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64), "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
}
_CONTENT_FIELDS = [field.name for field in pb.InferTensorContents.DESCRIPTOR.fields]
Output = tuple[str, str, np.ndarray]  # (name, datatype, values) of one output


def _where(index: int, tensor: pb.ModelInferRequest.InferInputTensor) -> str:
    return f"inputs[{index}] ({tensor.name!r})"


def typed_values(where: str, tensor: pb.ModelInferRequest.InferInputTensor) -> np.ndarray:
    """Flat float32 values of a tensor sent in the contents field of its datatype."""
    shape, datatype = list(tensor.shape), tensor.datatype
    dtype_of(where, datatype)  # an unknown datatype is refused by name first, as on REST
    check_shape(where, shape)
    sent = [name for name in _CONTENT_FIELDS if len(getattr(tensor.contents, name))]
    field, numpy_type = TYPED_FIELDS.get(datatype, (None, None))
    if field is None:
        raise BadInput(f"{where}: {datatype} values have no contents field; send them in "
                       "raw_input_contents")
    if sent not in ([], [field]):
        raise BadInput(f"{where}: {datatype} values go in contents.{field}; "
                       f"{', '.join(sent)} was sent")
    values = np.array(getattr(tensor.contents, field), dtype=numpy_type)
    expected = math.prod(shape)
    if values.size != expected:
        raise BadInput(f"{where}: shape {shape} holds {expected} values, contents.{field} "
                       f"has {values.size}")
    return checked_values(where, datatype, values)


def raw_contents(request: pb.ModelInferRequest) -> Sequence[bytes]:
    """The request's raw contents: none, or one entry per input."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} "
                       "inputs; send one per input, in the order of inputs")
    return raw


def request_tensors(request: pb.ModelInferRequest) -> list[Tensor]:
    """The request's inputs, each decoded once its shape has been checked."""
    raw = raw_contents(request)
    tensors = []
    for index, tensor in enumerate(request.inputs):
        where = _where(index, tensor)
        if raw and tensor.HasField("contents"):
            raise BadInput(f"{where}: has contents while the request sends "
                           "raw_input_contents; send every input one way")
        decode = (partial(raw_values, where, tensor.datatype, list(tensor.shape), raw[index])
                  if raw else partial(typed_values, where, tensor))
        tensors.append(Tensor(tensor.name, list(tensor.shape), decode))
    return tensors


def request_matrix(request: pb.ModelInferRequest, feature_names: Sequence[str],
                   max_batch: int) -> np.ndarray:
    """The [batch, n_features] float32 matrix of a request, in the model's feature order."""
    return assemble(request_tensors(request), feature_names, max_batch)


def infer_response(name: str, version: str, request_id: str, outputs: Sequence[Output],
                   raw: bool) -> pb.ModelInferResponse:
    """The response of the wanted outputs, raw (``raw_output_contents``) or typed."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for output_name, datatype, values in outputs:
        tensor = response.outputs.add(name=output_name, datatype=datatype,
                                      shape=list(values.shape))
        if raw:
            response.raw_output_contents.append(tensor_bytes(datatype, values))
        elif datatype == "BYTES":  # a multiclass model's class names
            tensor.contents.bytes_contents.extend(str(v).encode() for v in values.tolist())
        else:
            getattr(tensor.contents, TYPED_FIELDS[datatype][0]).extend(
                values.reshape(-1).tolist())
    return response


class RawInput(NamedTuple):
    """A gRPC input as ``raw_features.tensors_matrix`` reads a JSON one: its values as a
    list (strings for BYTES; None for a NaN, the only null a numeric tensor can carry)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: None = None


def raw_feature_inputs(request: pb.ModelInferRequest) -> list[RawInput]:
    """The inputs of a request to a model that encodes raw values (categories, nulls)."""
    raw = raw_contents(request)
    inputs = []
    for index, tensor in enumerate(request.inputs):
        where = _where(index, tensor)
        if tensor.datatype == "BYTES":
            values = (_raw_strings(where, raw[index]) if raw else
                      [_text(where, b) for b in tensor.contents.bytes_contents])
        else:
            numbers = _numbers(where, tensor, raw[index] if raw else None)
            values = [None if v != v else v for v in numbers.tolist()]
        inputs.append(RawInput(tensor.name, list(tensor.shape), tensor.datatype, values))
    return inputs


def _numbers(where: str, tensor: pb.ModelInferRequest.InferInputTensor,
             raw: bytes | None) -> np.ndarray:
    """A numeric input's values as sent, NaN kept (it is a null here): each is checked
    against its feature by ``raw_features``, as a JSON value is."""
    dtype = dtype_of(where, tensor.datatype)
    if raw is not None:
        if len(raw) % dtype.itemsize:
            raise BadInput(f"{where}: {len(raw)} bytes are no whole {tensor.datatype} values")
        return np.frombuffer(raw, dtype=dtype)
    field, numpy_type = TYPED_FIELDS.get(tensor.datatype, (None, None))
    if field is None:
        raise BadInput(f"{where}: {tensor.datatype} values have no contents field; send "
                       "them in raw_input_contents")
    return np.array(getattr(tensor.contents, field), dtype=numpy_type)


def _raw_strings(where: str, data: bytes) -> list[str]:
    """BYTES elements as the binary layout carries them: a 4-byte little-endian length,
    then that many bytes."""
    values, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise BadInput(f"{where}: BYTES data ends inside an element's length")
        size = int.from_bytes(data[offset:offset + 4], "little")
        if offset + 4 + size > len(data):
            raise BadInput(f"{where}: a BYTES element of {size} bytes runs past the data")
        values.append(_text(where, data[offset + 4:offset + 4 + size]))
        offset += 4 + size
    return values


def _text(where: str, value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise BadInput(f"{where}: a BYTES element is not UTF-8 text") from None

"""Open Inference Protocol tensors, whatever the wire: checked values and the model's matrix.

A request's tensors arrive as JSON lists (REST), as raw little-endian bytes (REST's binary
tensor data extension, gRPC's ``raw_input_contents``) or as typed lists (gRPC's
``InferTensorContents``). Each wire decodes its values to a numpy array; from there one
path checks them against the declared datatype (integers in range, floats finite in
float32, FP16 within FP16's range) and assembles the [batch, n_features] float32 matrix
in the model's feature order: one ``features`` tensor of shape [batch, n_features], or one
tensor per feature of shape [batch] or [batch, 1]. Outputs go back as arrays of their
declared datatype, which each wire encodes.

BYTES is refused: every model input is numeric.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from mlops.serving.errors import BadInput, check_rows

# Little-endian, as the binary extension and gRPC's raw contents carry them.
DTYPES: dict[str, np.dtype] = {name: np.dtype(code) for name, code in {
    "BOOL": "?", "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "u1",
    "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4",
    "FP64": "<f8"}.items()}
OUTPUT_DTYPES = {"prediction": "FP32", "label": "INT64"}
_FP16_MAX = float(np.finfo(np.float16).max)
# Casting a value beyond float32's range gives inf, which finite32 refuses with a 400;
# numpy's warning about it would only repeat that in the log (np.errstate per request
# cost more than the cast).
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning,
                        r"mlops\.serving\.")


class Tensor(NamedTuple):
    """One input as declared, its values decoded only once its shape has been checked
    (``decode`` returns them flat, as float32)."""

    name: str
    shape: list[int]
    decode: Callable[[], np.ndarray]


def dtype_of(where: str, datatype: str) -> np.dtype:
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise BadInput(f"{where}: datatype {datatype!r} is not accepted; the model takes "
                       f"numbers: {', '.join(DTYPES)}")
    return dtype


def check_shape(where: str, shape: Sequence[int]) -> None:
    if any(size < 0 for size in shape):
        raise BadInput(f"{where}: shape {list(shape)} has a negative dimension")


def raw_values(where: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview
               ) -> np.ndarray:
    """Flat float32 values of a tensor sent as raw little-endian bytes."""
    dtype = dtype_of(where, datatype)
    check_shape(where, shape)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise BadInput(f"{where}: shape {list(shape)} of {datatype} takes {expected} bytes, "
                       f"{len(raw)} were sent")
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and values.size and values.view(np.uint8).max() > 1:
        raise BadInput(f"{where}: BOOL bytes must be 0 or 1")
    return checked_values(where, datatype, values)


def checked_values(where: str, datatype: str, values: np.ndarray) -> np.ndarray:
    """Values decoded from any wire, checked against their datatype, as flat float32."""
    kinds = {"BOOL": "b"}.get(datatype, "iu" if datatype[0] in "IU" else "iuf")
    if values.size and values.dtype.kind not in kinds:
        raise BadInput(f"{where}: data holds values that are not {datatype} "
                       f"(e.g. {values.reshape(-1)[:1].tolist()!r}); send numbers of that type")
    dtype = DTYPES[datatype]
    if values.dtype.kind in "iu" and dtype.kind in "iu" and values.dtype != dtype:
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise BadInput(f"{where}: a value is out of the range of {datatype}")
    return in_range(where, datatype, finite32(where, values.reshape(-1)))


def in_range(where: str, datatype: str, values: np.ndarray) -> np.ndarray:
    """FP16 values are cast to the model's float32, so one beyond FP16's range would pass
    unnoticed: refused, as the declared type cannot hold it."""
    if datatype == "FP16" and values.size and np.abs(values).max() > _FP16_MAX:
        raise BadInput(f"{where}: a value is out of the range of FP16 (|x| <= {_FP16_MAX:g})")
    return values


def finite32(where: str, values: np.ndarray) -> np.ndarray:
    as_float = values.astype(np.float32)  # beyond float32's range becomes inf: refused below
    if not np.isfinite(as_float).all():
        raise BadInput(f"{where}: values must be finite float32 numbers (no NaN or Infinity)")
    return as_float


def assemble(tensors: Sequence[Tensor], feature_names: Sequence[str], max_batch: int
             ) -> np.ndarray:
    """The [batch, n_features] float32 matrix of a request's inputs, in the model's order."""
    if not tensors:
        raise BadInput("inputs is empty; send the 'features' tensor or one tensor per feature")
    names = [tensor.name for tensor in tensors]
    if len(set(names)) != len(names):
        raise BadInput(f"input names repeat: {names}")
    if names == ["features"]:
        return _features_tensor(tensors[0], len(feature_names), max_batch)
    unknown = sorted(set(names) - set(feature_names))
    missing = [name for name in feature_names if name not in names]
    if unknown or missing:
        raise BadInput(f"inputs must be 'features' or one per feature {list(feature_names)}; "
                       f"unknown {unknown}, missing {missing}")
    by_name = {tensor.name: (i, tensor) for i, tensor in enumerate(tensors)}
    rows = {tuple(t.shape[:1]) for t in tensors}
    columns = []
    for name in feature_names:
        index, tensor = by_name[name]
        if len(tensor.shape) not in (1, 2) or list(tensor.shape[1:]) not in ([], [1]):
            raise BadInput(f"inputs[{index}] ({name!r}): shape must be [batch] or [batch, 1], "
                           f"is {list(tensor.shape)}")
        columns.append(tensor.decode())
    if len(rows) != 1:
        raise BadInput(f"per-feature inputs disagree on the batch size: {sorted(rows)}")
    _check_batch(len(columns[0]), max_batch)
    return np.column_stack(columns)


def _features_tensor(tensor: Tensor, width: int, max_batch: int) -> np.ndarray:
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise BadInput(f"inputs[0] ('features'): shape must be [batch, {width}], "
                       f"is {list(tensor.shape)}")
    _check_batch(tensor.shape[0], max_batch)
    return tensor.decode().reshape(tensor.shape)


def _check_batch(rows: int, max_batch: int) -> None:
    if rows == 0:
        raise BadInput("the batch is empty; send at least one row")
    check_rows(rows, max_batch, "rows")


def output_names(task: str) -> list[str]:
    return ["prediction"] if task == "regression" else ["prediction", "label"]


def label_datatype(labels: Sequence[int | str] | np.ndarray | None) -> str:
    """INT64 for 0/1 labels and integer classes, BYTES for a multiclass model's names."""
    return "BYTES" if labels is not None and len(labels) and isinstance(labels[0], str) \
        else "INT64"


def tensor_bytes(datatype: str, values: np.ndarray) -> bytes:
    """A tensor's raw bytes: little-endian values, or for BYTES each element's UTF-8 after
    its 4-byte little-endian length (the binary tensor data extension's layout)."""
    if datatype != "BYTES":
        return values.tobytes()
    encoded = [str(value).encode() for value in values.reshape(-1)]
    return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)


def select_outputs(requested: Sequence[str] | None, task: str) -> list[str]:
    """The outputs a request asks for (all of the model's when it names none)."""
    available = output_names(task)
    if not requested:
        return available
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise BadInput(f"unknown output(s) {list(unknown)}; this model has {available}")
    return list(requested)


def output_arrays(wanted: Sequence[str], scores: np.ndarray,
                  labels: Sequence[int] | np.ndarray | None) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, values) of each wanted output, as arrays of that datatype."""
    label_type = label_datatype(labels)
    arrays = {"prediction": lambda: np.asarray(scores, dtype=DTYPES["FP32"]),
              "label": lambda: np.asarray(labels, dtype=DTYPES.get(label_type, object))}
    types = {**OUTPUT_DTYPES, "label": label_type}
    return [(name, types[name], arrays[name]()) for name in wanted]
